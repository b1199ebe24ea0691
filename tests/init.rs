//! `jailtx init` is idempotent (issue 2, item 4): a second run changes
//! nothing anywhere under the root, state dir included (journal, history,
//! modes), and files no second transaction.

mod support;

use support::{Root, assert_same};

#[test]
fn init_twice_changes_nothing() {
    let r = Root::bare();
    r.ok(&["init"]);
    let first = r.everything();
    assert!(first.contains_key(".jailtx/history"), "{first:?}");
    r.ok(&["init"]);
    // The lock file's contents (the last holder's pid) are left out.
    assert_same("a second init", &r.everything(), &first);
    assert_eq!(r.transactions().len(), 1, "{}", r.history());
}
