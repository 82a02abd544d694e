//! The annotation that stages a policy (docs/staged.md).

use serde_json::{Map, Value};

use crate::walk::{self, Cx};

/// The annotation that stages a policy: `"true"` evaluates it beside the
/// enforced policies without enforcing it, `"false"` enforces it.
pub const STAGED_ANNOTATION: &str = "palisade.dev/staged";

/// The value of [`STAGED_ANNOTATION`] in `annotations`. Anything but
/// `"true"` or `"false"` is an error that rejects the object: enforcing or
/// not must never be guessed from a typo.
pub(crate) fn read(cx: &mut Cx, annotations: &Map<String, Value>) -> bool {
    let path = format!("metadata.annotations[{STAGED_ANNOTATION:?}]");
    match annotations.get(STAGED_ANNOTATION) {
        // As everywhere in manifests, an explicit null is an absent field.
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(other) => {
            let found = match other {
                Value::String(s) => format!("{s:?}"),
                other => walk::describe(other),
            };
            cx.error(
                &path,
                format!("expected \"true\" (staged) or \"false\" (enforced), found {found}"),
            );
            false
        }
    }
}
