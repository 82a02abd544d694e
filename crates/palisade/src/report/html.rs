//! The page: a minijinja template (auto-escaped as HTML, since names and
//! labels come from user manifests), the page's style and script, and the
//! report's data embedded as JSON that the script draws from.

use minijinja::value::Serde;
use minijinja::{context, Environment, Value};

use super::Report;

const TEMPLATE: &str = include_str!("assets/report.html");
const STYLE: &str = include_str!("assets/report.css");
const SCRIPT: &str = include_str!("assets/report.js");

/// Renders the whole page. The JSON goes through `tojson`, which escapes
/// `<`, `>`, `&` and `'`, so no name can close the data's script element.
pub fn render(report: &Report) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    // The `.html` name turns on HTML auto-escaping for every expression.
    env.add_template("report.html", TEMPLATE)?;
    env.get_template("report.html")?.render(context! {
        report => Value::from(Serde(report)),
        style => Value::from_safe_string(STYLE.to_string()),
        script => Value::from_safe_string(SCRIPT.to_string()),
    })
}
