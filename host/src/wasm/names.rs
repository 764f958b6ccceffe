//! The name a policy goes by, which a hot reload may change.
//!
//! [`crate::eviction::EvictionPolicy::name`] lends a `&str` for as long as the
//! policy is borrowed, while a reload on another thread may install a policy
//! with another name. So names are never replaced, only appended: a borrow of
//! the old name stays valid, and the newest one is what `current` returns.
//! A reload that keeps the name adds nothing; one that changes it adds one
//! bounded string (see [`super::guest_text::MAX_NAME`]) for the life of the
//! policy.

use std::sync::OnceLock;

struct Link {
    name: Box<str>,
    next: OnceLock<Box<Link>>,
}

impl Link {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            next: OnceLock::new(),
        }
    }
}

pub struct NameHistory {
    head: Link,
}

impl NameHistory {
    pub fn new(name: &str) -> Self {
        Self {
            head: Link::new(name),
        }
    }

    fn newest(&self) -> &Link {
        let mut link = &self.head;
        while let Some(next) = link.next.get() {
            link = next;
        }
        link
    }

    pub fn current(&self) -> &str {
        &self.newest().name
    }

    /// Makes `name` current. Callers serialise (a reload holds the runtime
    /// lock), so the newest link is still the newest when it is extended.
    pub fn set(&self, name: &str) {
        let newest = self.newest();
        if &*newest.name != name {
            let _ = newest.next.set(Box::new(Link::new(name)));
        }
    }
}

impl Drop for NameHistory {
    fn drop(&mut self) {
        // Iteratively, so a long history cannot overflow the stack.
        let mut next = self.head.next.take();
        while let Some(mut link) = next {
            next = link.next.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_change_without_invalidating_borrows() {
        let names = NameHistory::new("lru");
        let before = names.current();
        names.set("fifo");
        names.set("fifo");
        assert_eq!(before, "lru");
        assert_eq!(names.current(), "fifo");
        for i in 0..10_000 {
            names.set(if i % 2 == 0 { "a" } else { "b" });
        }
        assert_eq!(names.current(), "b");
    }
}
