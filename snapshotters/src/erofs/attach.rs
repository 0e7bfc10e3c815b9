//! Mounting an EROFS image file read-only on a directory, and taking it off again. Linux
//! 6.12 mounts the file itself; older kernels need a loop device, which is made to vanish
//! by itself (autoclear) once the mount is gone.

use crate::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether `dir` has something mounted on it: it lies on another device than its parent.
pub fn is_mountpoint(dir: &Path) -> Result<bool> {
    let here = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let up = std::fs::symlink_metadata(parent)
        .map_err(|e| Error::io(format!("stat {}", parent.display()), e))?;
    Ok(here.dev() != up.dev())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} contains a NUL byte", p.display())))
}

fn mount_erofs(source: &Path, target: &Path) -> std::io::Result<()> {
    let (src, tgt) = match (cstr(source), cstr(target)) {
        (Ok(s), Ok(t)) => (s, t),
        _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    };
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            c"erofs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Mounts the image file `image` read-only on `target`: the file itself where the kernel
/// can (file-backed EROFS), else through a loop device.
pub fn mount(image: &Path, target: &Path) -> Result<()> {
    match mount_erofs(image, target) {
        Ok(()) => Ok(()),
        // A kernel without file-backed mounts wants a block device.
        Err(e) if e.raw_os_error() == Some(libc::ENOTBLK) => mount_loop(image, target),
        Err(e) => Err(Error::io(
            format!(
                "mount EROFS image {} on {}",
                image.display(),
                target.display()
            ),
            e,
        )),
    }
}

// linux/loop.h
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn open(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let p = cstr(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path; the descriptor returned is ours alone.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `image` to a free loop device, read-only and cleared on last close, and mounts the
/// device on `target`. Another process may take the free device first: try the next.
pub fn mount_loop(image: &Path, target: &Path) -> Result<()> {
    let file = open(image, libc::O_RDONLY)
        .map_err(|e| Error::io(format!("open {}", image.display()), e))?;
    let control = open(Path::new("/dev/loop-control"), libc::O_RDWR)
        .map_err(|e| Error::io("open /dev/loop-control", e))?;
    let mut last = std::io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::io(
                "find a free loop device",
                std::io::Error::last_os_error(),
            ));
        }
        let path = format!("/dev/loop{n}");
        let dev = open(Path::new(&path), libc::O_RDONLY)
            .map_err(|e| Error::io(format!("open {path}"), e))?;
        // SAFETY: an all-zero loop_config is valid (no offset, no limit, no name).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = file.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a loop_config we own for the length of the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc != 0 {
            last = std::io::Error::last_os_error();
            if last.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            break;
        }
        return mount_erofs(Path::new(&path), target).map_err(|e| {
            // SAFETY: LOOP_CLR_FD on the device we configured takes no argument.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
            Error::io(
                format!("mount {path} ({}) on {}", image.display(), target.display()),
                e,
            )
        });
    }
    Err(Error::io(
        format!("bind {} to a loop device", image.display()),
        last,
    ))
}

/// Takes every mount off `dir` (detaching busy ones: their users keep them until done).
pub fn unmount(dir: &Path) -> Result<()> {
    let c = cstr(dir)?;
    for _ in 0..16 {
        if !is_mountpoint(dir)? {
            return Ok(());
        }
        // SAFETY: a NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(Error::io(
                format!("unmount {}", dir.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Err(Error::FailedPrecondition(format!(
        "{} stays mounted after 16 unmounts",
        dir.display()
    )))
}
