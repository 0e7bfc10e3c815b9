//! Giving the heap back: glibc keeps what worker threads freed in per-thread arenas, so a
//! 354 MiB pull left berthd at 68 MB of RSS, 49 MB of it anonymous and unused (bench-pull,
//! 2026-11-30). berthd allows two arenas and trims them after its heavy operations (pull,
//! unpack, import): 30 MB after the same pull.

/// At most two malloc arenas (glibc's default is eight per core): less memory stranded in
/// arenas no thread is using.
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the heap's free pages to the kernel, off the async threads (it walks every arena).
pub async fn release() {
    let _ = tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only releases memory the allocator holds free.
        unsafe {
            libc::malloc_trim(0);
        }
    })
    .await;
}
