//! Removing the staging annotation from a manifest file's text, and only
//! it: comments, order, quoting and the other documents stay as written.
//!
//! YAML and JSON have no parser here that keeps positions, so an edit is
//! found by trying the few ways the annotation can be written (its own
//! line in a block mapping, an entry of a flow mapping, the last member of
//! a JSON object) on each line of the object's document that names it, and
//! accepted only when decoding the result gives exactly the objects before,
//! with the promoted one no longer staged.

use palisade_k8s::{decode, Located, Object, ObjectKey, STAGED_ANNOTATION};

/// The text of `file` with the staging annotation of every object of
/// `targets` removed. Each target must be decoded from the file, staged;
/// the result is checked to decode without errors to the same objects,
/// the targets enforced.
pub fn unstage(file: &str, text: &str, targets: &[ObjectKey]) -> Result<String, String> {
    let mut cur = text.to_string();
    for key in targets {
        let objects = decoded(file, &cur)?;
        let Some(target) = objects.iter().find(|o| o.value.key() == *key) else {
            return Err(format!("{file}: {key} not found"));
        };
        if !is_staged(&target.value) {
            return Err(format!("{file}: {key} is not staged"));
        }
        let want: Vec<Object> = objects
            .iter()
            .map(|o| {
                let mut v = o.value.clone();
                if v.key() == *key {
                    set_enforced(&mut v);
                }
                v
            })
            .collect();
        let at = target.line;
        cur = edit(file, &cur, at, &want).ok_or_else(|| {
            format!(
                "{file}{}: {key}: the annotation {STAGED_ANNOTATION} cannot be removed without changing anything else; remove it by hand",
                at.map(|l| format!(":{l}")).unwrap_or_default()
            )
        })?;
    }
    Ok(cur)
}

/// The objects of `text`; an error when it does not decode cleanly (the
/// file is not touched then).
fn decoded(file: &str, text: &str) -> Result<Vec<Located<Object>>, String> {
    let (objects, diags) = decode(file, text.as_bytes());
    match diags.iter().find(|d| d.is_error()) {
        Some(d) => Err(d.to_string()),
        None => Ok(objects),
    }
}

pub(super) fn is_staged(o: &Object) -> bool {
    match o {
        Object::NetworkPolicy(p) => p.staged,
        Object::AdminPolicy(p) => p.staged,
        _ => false,
    }
}

fn set_enforced(o: &mut Object) {
    match o {
        Object::NetworkPolicy(p) => p.staged = false,
        Object::AdminPolicy(p) => p.staged = false,
        _ => {}
    }
}

/// The first candidate edit, on a line of the document starting at `line`,
/// whose result decodes to exactly `want`.
fn edit(file: &str, text: &str, line: Option<usize>, want: &[Object]) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = line.map_or(0, |l| l.saturating_sub(1));
    let end = (start + 1..lines.len())
        .find(|&i| is_separator(lines[i]))
        .unwrap_or(lines.len());
    for i in (start..end).filter(|&i| lines[i].contains(STAGED_ANNOTATION)) {
        for candidate in candidates(&lines, i) {
            let (objects, diags) = decode(file, candidate.as_bytes());
            let same =
                objects.len() == want.len() && objects.iter().zip(want).all(|(o, w)| o.value == *w);
            if same && !diags.iter().any(|d| d.is_error()) {
                return Some(candidate);
            }
        }
    }
    None
}

/// A YAML document separator or end marker.
fn is_separator(line: &str) -> bool {
    let l = line.trim_end();
    l == "---" || l == "..." || l.starts_with("--- ") || l.starts_with("---\t")
}

/// The texts that could be `lines` without the annotation on line `i`.
fn candidates(lines: &[&str], i: usize) -> Vec<String> {
    let join = |f: &dyn Fn(usize, &str) -> Option<String>| -> String {
        lines
            .iter()
            .enumerate()
            .filter_map(|(j, l)| f(j, l))
            .collect()
    };
    let mut out = Vec::new();
    // The annotation on a line of its own (a YAML block mapping entry or a
    // JSON member): only then may the whole line go, since a line that
    // holds more (a flow mapping) would lose the rest with it.
    let own_line = lines[i]
        .trim_start()
        .trim_start_matches(['"', '\''])
        .starts_with(STAGED_ANNOTATION);
    if own_line {
        out.push(join(&|j, l| (j != i).then(|| l.to_string())));
        // The last member of a JSON object: the previous one loses its comma.
        if let Some(prev) = (0..i).rev().find(|&j| !lines[j].trim().is_empty()) {
            if let Some(p) = without_trailing_comma(lines[prev]) {
                out.push(join(&|j, x| match j {
                    _ if j == i => None,
                    _ if j == prev => Some(p.clone()),
                    _ => Some(x.to_string()),
                }));
            }
        }
    } else if let Some(l) = without_entry(lines[i]) {
        out.push(join(&|j, x| {
            Some(if j == i { l.clone() } else { x.to_string() })
        }));
    }
    out
}

/// `line` without the `palisade.dev/staged: VALUE` entry of a flow mapping
/// and the comma that separates it from its neighbour.
fn without_entry(line: &str) -> Option<String> {
    let at = line.find(STAGED_ANNOTATION)?;
    // The key may be quoted.
    let start = match line[..at].chars().last() {
        Some(q @ ('"' | '\'')) => at - q.len_utf8(),
        _ => at,
    };
    let mut rest = &line[at + STAGED_ANNOTATION.len()..];
    rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
    rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let value_len = match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].find(q)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    let after = &rest[value_len..];
    let end = line.len() - after.len();
    let trimmed = after.trim_start();
    if let Some(next) = trimmed.strip_prefix(',') {
        // An entry follows: drop the separator after this one.
        let skip = after.len() - next.trim_start().len();
        return Some(format!("{}{}", &line[..start], &line[end + skip..]));
    }
    // The last entry: drop the separator before it, if any.
    let before = line[..start].trim_end();
    match before.strip_suffix(',') {
        Some(b) => Some(format!("{b}{}", &line[end..])),
        None => Some(format!("{}{}", &line[..start], &line[end..])),
    }
}

fn without_trailing_comma(line: &str) -> Option<String> {
    let body = line.trim_end();
    let b = body.strip_suffix(',')?;
    Some(format!("{b}{}", &line[body.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "NetworkPolicy".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_block_line_is_removed_and_nothing_else() {
        let text = "# header\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: shop\n  annotations:\n    # why staged\n    palisade.dev/staged: \"true\"\n    owner: x\nspec: {podSelector: {}}\n---\n# next\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: b\n  namespace: shop\n  annotations:\n    palisade.dev/staged: \"true\"\nspec: {podSelector: {}}\n";
        let got = unstage("p.yaml", text, &[np("b")]).unwrap();
        assert_eq!(
            got,
            "# header\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: shop\n  annotations:\n    # why staged\n    palisade.dev/staged: \"true\"\n    owner: x\nspec: {podSelector: {}}\n---\n# next\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: b\n  namespace: shop\n  annotations:\nspec: {podSelector: {}}\n"
        );
    }

    #[test]
    fn flow_entries_lose_their_separator() {
        for (line, want) in [
            ("{palisade.dev/staged: \"true\"}", "{}"),
            ("{palisade.dev/staged: 'true', owner: x}", "{owner: x}"),
            (
                "{owner: x, \"palisade.dev/staged\": \"true\"}",
                "{owner: x}",
            ),
            (
                "{a: b, palisade.dev/staged: \"true\", c: d}",
                "{a: b, c: d}",
            ),
        ] {
            let text = format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: shop\n  annotations: {line}\nspec: {{podSelector: {{}}}}\n");
            let got = unstage("p.yaml", &text, &[np("a")]).unwrap();
            assert_eq!(got, text.replace(line, want), "{line}");
        }
    }

    #[test]
    fn json_members_keep_the_object_valid() {
        let last = "{\n  \"apiVersion\": \"networking.k8s.io/v1\",\n  \"kind\": \"NetworkPolicy\",\n  \"metadata\": {\n    \"name\": \"a\",\n    \"namespace\": \"shop\",\n    \"annotations\": {\n      \"owner\": \"x\",\n      \"palisade.dev/staged\": \"true\"\n    }\n  },\n  \"spec\": {\"podSelector\": {}}\n}\n";
        assert_eq!(
            unstage("p.json", last, &[np("a")]).unwrap(),
            last.replace(
                "      \"owner\": \"x\",\n      \"palisade.dev/staged\": \"true\"\n",
                "      \"owner\": \"x\"\n"
            )
        );
    }

    #[test]
    fn one_item_of_a_list_is_promoted() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata:\n    name: a\n    namespace: shop\n    annotations:\n      palisade.dev/staged: \"true\"\n  spec: {podSelector: {}}\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata:\n    name: b\n    namespace: shop\n    annotations:\n      palisade.dev/staged: \"true\"\n  spec: {podSelector: {}}\n";
        let got = unstage("l.yaml", text, &[np("b")]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let want: String = lines
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 17)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn what_cannot_be_promoted_is_named() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: shop, annotations: {palisade.dev/staged: \"true\"}}\nspec: {podSelector: {}}\n";
        // A flow mapping on the metadata line: the entry goes, the rest stays.
        assert_eq!(
            unstage("p.yaml", text, &[np("a")]).unwrap(),
            text.replace(
                "annotations: {palisade.dev/staged: \"true\"}",
                "annotations: {}"
            )
        );
        let complex = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: shop\n  annotations:\n    ? palisade.dev/staged\n    : \"true\"\nspec: {podSelector: {}}\n";
        assert_eq!(
            unstage("p.yaml", complex, &[np("a")]).unwrap_err(),
            "p.yaml:1: NetworkPolicy shop/a: the annotation palisade.dev/staged cannot be removed without changing anything else; remove it by hand"
        );
        let plain = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: shop}\nspec: {podSelector: {}}\n";
        assert_eq!(
            unstage("p.yaml", plain, &[np("a")]).unwrap_err(),
            "p.yaml: NetworkPolicy shop/a is not staged"
        );
        assert_eq!(
            unstage("p.yaml", plain, &[np("b")]).unwrap_err(),
            "p.yaml: NetworkPolicy shop/b not found"
        );
    }
}
