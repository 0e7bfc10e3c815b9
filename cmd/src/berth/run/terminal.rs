//! This terminal: its size, and raw mode while a container's terminal is wired to it.

/// This terminal's size (columns, rows), when stdin is one.
pub(super) fn window_size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl on stdin with a pointer to our struct.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// This terminal in raw mode until dropped.
pub(super) struct RawMode(libc::termios);

impl RawMode {
    pub(super) fn enter() -> Option<Self> {
        // SAFETY: isatty/tcgetattr/tcsetattr on stdin with termios structs we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(RawMode(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the saved attributes on stdin.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
