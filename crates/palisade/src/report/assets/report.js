"use strict";
// Draws the graph and the matrix from the report's embedded data. Every
// name comes from user manifests: text goes through textContent and
// setAttribute only, never through HTML parsing.
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var svg = document.getElementById("graph");
  // The parser put the inline <svg> in the SVG namespace; reuse it rather
  // than spelling the namespace out.
  var SVG = svg.namespaceURI;
  var WORDS = { A: "allowed", D: "denied", N: "no common address family", P: "partly allowed" };
  var MARKS = { A: "\u2713", D: "\u2717", N: "\u2013", P: "\u25d0" };

  var NODE_W = 168, NODE_H = 30, GAP_X = 36, GAP_Y = 30, PAD = 14, HEAD = 26, BOX_GAP = 56, MAX_W = 1320;

  function svgEl(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function htmlEl(name, attrs, text, parent) {
    var e = document.createElement(name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function fit(text, width) {
    var max = Math.floor(width / 6.6);
    return text.length <= max ? text : text.slice(0, Math.max(1, max - 1)) + "\u2026";
  }

  // Namespaces as boxes laid left to right, wrapping at MAX_W; each box
  // holds its nodes in a near-square grid.
  function layout() {
    var groups = [], byNs = {};
    data.nodes.forEach(function (n) {
      if (!(n.namespace in byNs)) {
        byNs[n.namespace] = { name: n.namespace, nodes: [] };
        groups.push(byNs[n.namespace]);
      }
      byNs[n.namespace].nodes.push(n);
    });
    var maxCols = Math.max(1, Math.floor((MAX_W - 2 * PAD + GAP_X) / (NODE_W + GAP_X)));
    var x = 0, y = 0, rowH = 0, width = 0, pos = {};
    groups.forEach(function (g) {
      var cols = Math.min(maxCols, Math.max(1, Math.ceil(Math.sqrt(g.nodes.length))));
      var rows = Math.ceil(g.nodes.length / cols);
      g.w = Math.max(cols * (NODE_W + GAP_X) - GAP_X + 2 * PAD, g.name.length * 7.5 + 2 * PAD);
      g.h = HEAD + rows * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD;
      if (x > 0 && x + g.w > MAX_W) { x = 0; y += rowH + BOX_GAP; rowH = 0; }
      g.x = x; g.y = y;
      g.nodes.forEach(function (n, i) {
        pos[n.id] = {
          x: g.x + PAD + (i % cols) * (NODE_W + GAP_X),
          y: g.y + HEAD + PAD + Math.floor(i / cols) * (NODE_H + GAP_Y)
        };
      });
      x += g.w + BOX_GAP;
      rowH = Math.max(rowH, g.h);
      width = Math.max(width, g.x + g.w);
    });
    return { groups: groups, pos: pos, width: width, height: y + rowH };
  }

  // Where the segment from a node's centre towards (tx, ty) leaves its box.
  function border(cx, cy, tx, ty) {
    var dx = tx - cx, dy = ty - cy;
    if (dx === 0 && dy === 0) { return [cx, cy]; }
    var t = Math.min(dx === 0 ? Infinity : (NODE_W / 2 + 2) / Math.abs(dx),
                     dy === 0 ? Infinity : (NODE_H / 2 + 2) / Math.abs(dy));
    return [cx + dx * t, cy + dy * t];
  }

  function drawGraph() {
    var L = layout(), margin = 48; // room for arrows that bend outside the boxes
    svg.setAttribute("width", L.width + 2 * margin);
    svg.setAttribute("height", L.height + 2 * margin);
    svg.setAttribute("viewBox", -margin + " " + -margin + " " + (L.width + 2 * margin) + " " + (L.height + 2 * margin));
    var clusters = svgEl("g", { "class": "clusters" }, svg);
    L.groups.forEach(function (g) {
      var c = svgEl("g", { "class": "cluster", "data-namespace": g.name }, clusters);
      svgEl("rect", { x: g.x, y: g.y, width: g.w, height: g.h }, c);
      svgEl("text", { x: g.x + PAD, y: g.y + 18 }, c).textContent = g.name;
      svgEl("title", {}, c).textContent = "namespace " + g.name + ": " + g.nodes.length + (data.level === "namespace" ? "" : " endpoints");
    });
    var edges = svgEl("g", { "class": "edges" }, svg);
    data.edges.forEach(function (e) {
      var a = L.pos[e.src], b = L.pos[e.dst];
      var ax = a.x + NODE_W / 2, ay = a.y + NODE_H / 2, bx = b.x + NODE_W / 2, by = b.y + NODE_H / 2;
      // Each arrow bends to its left: the two arrows between a pair of
      // nodes part, and an arrow rarely runs through the nodes between.
      var len = Math.hypot(bx - ax, by - ay) || 1, bend = Math.max(18, len * 0.16);
      var cx = (ax + bx) / 2 + (by - ay) / len * bend, cy = (ay + by) / 2 - (bx - ax) / len * bend;
      var p = border(ax, ay, cx, cy), q = border(bx, by, cx, cy);
      var path = svgEl("path", {
        "class": "edge", "data-src": e.src, "data-dst": e.dst, "data-ports": e.ports.join(" "),
        d: "M" + p[0].toFixed(1) + "," + p[1].toFixed(1) + " Q" + cx.toFixed(1) + "," + cy.toFixed(1) +
           " " + q[0].toFixed(1) + "," + q[1].toFixed(1),
        "marker-end": "url(#arrow)"
      }, edges);
      svgEl("title", {}, path).textContent = e.src + " \u2192 " + e.dst + ": " + e.ports.join(", ");
    });
    var nodes = svgEl("g", { "class": "nodes" }, svg);
    data.nodes.forEach(function (n) {
      var p = L.pos[n.id];
      var g = svgEl("g", {
        "class": "node iso-" + n.isolation, "data-id": n.id, "data-namespace": n.namespace,
        transform: "translate(" + p.x + "," + p.y + ")"
      }, nodes);
      svgEl("rect", { width: NODE_W, height: NODE_H }, g);
      svgEl("text", { x: 8, y: 19 }, g).textContent = fit(n.label, NODE_W - 14);
      svgEl("title", {}, g).textContent = n.detail.join("\n");
      g.addEventListener("mouseenter", function () { focus(n.id); });
      g.addEventListener("mouseleave", function () { focus(null); });
    });
  }

  function focus(id) {
    svg.classList.toggle("focus", id !== null);
    var lit = {};
    if (id !== null) { lit[id] = true; }
    svg.querySelectorAll(".edge").forEach(function (e) {
      var on = id !== null && (e.getAttribute("data-src") === id || e.getAttribute("data-dst") === id);
      e.classList.toggle("hl", on);
      if (on) { lit[e.getAttribute("data-src")] = true; lit[e.getAttribute("data-dst")] = true; }
    });
    svg.querySelectorAll(".node").forEach(function (n) {
      n.classList.toggle("hl", lit[n.getAttribute("data-id")] === true);
    });
  }

  function drawMatrix() {
    var root = document.getElementById("matrix");
    var names = data.nodes.map(function (n) { return n.id; });
    data.ports.forEach(function (port, pi) {
      htmlEl("h3", {}, port, root);
      var wrap = htmlEl("div", { "class": "matrix-wrap" }, null, root);
      var table = htmlEl("table", { "class": "matrix", "data-port": port }, null, wrap);
      var head = htmlEl("tr", {}, null, htmlEl("thead", {}, null, table));
      htmlEl("th", { "class": "corner" }, "from \\ to", head);
      names.forEach(function (n) { htmlEl("th", { scope: "col", "data-id": n }, n, head); });
      var body = htmlEl("tbody", {}, null, table);
      var frag = document.createDocumentFragment();
      data.cells[pi].forEach(function (row, ri) {
        var tr = htmlEl("tr", {}, null, frag);
        htmlEl("th", { scope: "row", "data-id": names[ri] }, names[ri], tr);
        row.forEach(function (cell, ci) {
          var lines = [WORDS[cell[0]] + " " + port + ": " + names[ri] + " \u2192 " + names[ci]];
          cell[1].forEach(function (r) { lines.push(data.reasons[r]); });
          htmlEl("td", {
            "class": "cell " + cell[0], "data-src": names[ri], "data-dst": names[ci], title: lines.join("\n")
          }, MARKS[cell[0]], tr);
        });
      });
      body.appendChild(frag);
    });
  }

  drawGraph();
  drawMatrix();
})();
