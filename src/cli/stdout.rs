//! The command's stdout: a reader that goes away (`| head`) ends the output,
//! never the process.
//!
//! Rust ignores SIGPIPE, so `println!` panics on EPIPE. Restoring SIGPIPE
//! instead would let a closed pipe kill a command halfway through a
//! transaction; here a broken pipe only stops further output. Any other write
//! error (a full disk behind `>`) is kept and turns a successful exit into
//! exit 6, so a truncated report is never taken for a complete one.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes `args` to stdout, unless an earlier write found it closed.
pub fn write(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe
            && let Ok(mut f) = FAILED.lock()
        {
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The first write error other than a broken pipe, if any.
pub fn failure() -> Option<String> {
    FAILED.lock().ok().and_then(|f| f.clone())
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::stdout::write(format_args!($($arg)*)) };
}

/// `println!` through [`write`].
macro_rules! outln {
    () => { $crate::cli::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
