//! A dense set of identities, one bit each.

use crate::IdentityId;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    pub fn with_capacity(n: usize) -> Self {
        IdSet {
            words: vec![0; n.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, id: IdentityId) {
        let id = id.index();
        let w = id / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (id % 64);
    }

    #[inline]
    pub fn contains(&self, id: IdentityId) -> bool {
        let id = id.index();
        self.words
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = IdentityId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| IdentityId::new(i * 64 + b))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}
