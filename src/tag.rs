//! Tags as the platform writes them, `Vocabulary:Term`. Kept below `config` and `platform`:
//! the configuration names tags and the platform client carries them.

use std::fmt;

/// A model tag, `Vocabulary:Term` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub vocabulary: String,
    pub term: String,
}

impl Tag {
    pub fn parse(text: &str) -> Option<Tag> {
        let (vocabulary, term) = text.trim().split_once(':')?;
        let (vocabulary, term) = (vocabulary.trim(), term.trim());
        (!vocabulary.is_empty() && !term.is_empty()).then(|| Tag {
            vocabulary: vocabulary.to_string(),
            term: term.to_string(),
        })
    }

    /// The platform's TAGS text form: entries joined with `;`.
    pub fn join(tags: &[Tag]) -> String {
        tags.iter()
            .map(Tag::to_string)
            .collect::<Vec<_>>()
            .join(";")
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.vocabulary, self.term)
    }
}
