use std::collections::BTreeMap;
use std::fmt;

/// A validated `metav1.LabelSelector`. `matchLabels` entries are folded into
/// `In` requirements with one value, so there is one matching path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    /// Sorted and deduplicated: two selectors that select the same things
    /// the same way compare equal, which the selector cache relies on.
    pub requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    In { key: String, values: Vec<String> },
    NotIn { key: String, values: Vec<String> },
    Exists { key: String },
    DoesNotExist { key: String },
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::In { key, .. }
            | Requirement::NotIn { key, .. }
            | Requirement::Exists { key }
            | Requirement::DoesNotExist { key } => key,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            // An object without the key satisfies NotIn, as in Kubernetes.
            Requirement::NotIn { key, values } => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        }
    }
}

impl LabelSelector {
    /// The empty selector, which selects everything.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    pub fn new(mut requirements: Vec<Requirement>) -> Self {
        for r in &mut requirements {
            if let Requirement::In { values, .. } | Requirement::NotIn { values, .. } = r {
                values.sort();
                values.dedup();
            }
        }
        requirements.sort();
        requirements.dedup();
        LabelSelector { requirements }
    }

    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector::new(
            labels
                .into_iter()
                .map(|(k, v)| Requirement::In {
                    key: k.to_string(),
                    values: vec![v.to_string()],
                })
                .collect(),
        )
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// kubectl's selector syntax: `app=web,tier in (a,b),!legacy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In { key, values } if values.len() == 1 => {
                    write!(f, "{key}={}", values[0])?
                }
                Requirement::In { key, values } => write!(f, "{key} in ({})", values.join(","))?,
                Requirement::NotIn { key, values } => {
                    write!(f, "{key} notin ({})", values.join(","))?
                }
                Requirement::Exists { key } => write!(f, "{key}")?,
                Requirement::DoesNotExist { key } => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn notin_and_doesnotexist_match_objects_without_the_key() {
        let none = labels(&[]);
        let notin = Requirement::NotIn {
            key: "a".into(),
            values: vec!["x".into()],
        };
        assert!(notin.matches(&none));
        assert!(!notin.matches(&labels(&[("a", "x")])));
        assert!(notin.matches(&labels(&[("a", "y")])));
        assert!(Requirement::DoesNotExist { key: "a".into() }.matches(&none));
        assert!(!Requirement::Exists { key: "a".into() }.matches(&none));
    }

    #[test]
    fn equal_selectors_normalize_to_equal_values() {
        let a = LabelSelector::from_labels([("b", "2"), ("a", "1")]);
        let b = LabelSelector::from_labels([("a", "1"), ("b", "2"), ("a", "1")]);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=1,b=2");
        assert!(LabelSelector::everything().matches(&labels(&[("z", "z")])));
    }
}
