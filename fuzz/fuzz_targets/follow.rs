//! Shared by the targets: drives a streaming follower over the input cut
//! in two, telling it of `unseen` uncaptured bytes after the first part.
//! It must never claim more bytes than it was given.

/// `feed` returns `Ok(Some(n))` when the message ended after `n` bytes,
/// `Ok(None)` when it wants more, `Err` on bytes that cannot be its.
pub fn in_two_parts<E>(
    input: &[u8],
    cut: usize,
    unseen: u64,
    mut feed: impl FnMut(&[u8]) -> Result<Option<usize>, E>,
    mut skip_unseen: impl FnMut(u64),
) {
    let cut = cut % (input.len() + 1);
    for part in [&input[..cut], &input[cut..]] {
        match feed(part) {
            Ok(Some(n)) => {
                assert!(n <= part.len());
                return;
            }
            Ok(None) => skip_unseen(unseen),
            Err(_) => return,
        }
    }
}
