//! Kernel receive times for the benches' subscriber swarms: `SO_TIMESTAMPNS` on a socket, then
//! `recvmsg` with the time the kernel queued the data on it (wall clock), the moment the bytes
//! reached the subscriber, apart from when the swarm's one thread got round to reading them.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

/// Wall-clock microseconds (the clock the kernel's receive times use).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A subscriber's socket with kernel receive times on (`SO_TIMESTAMPNS`), read with `recvmsg`.
///
/// A read that returns less than it asked for has drained the socket, so the readiness is cleared
/// at once: one `recvmsg` per burst of data instead of a second one that finds nothing (the swarm
/// shares the machine's cores with the server it measures).
pub struct Stamped(AsyncFd<std::net::TcpStream>);

impl Stamped {
    pub fn new(tcp: tokio::net::TcpStream) -> std::io::Result<Stamped> {
        let fd = tcp.as_raw_fd();
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let std = tcp.into_std()?;
        std.set_nonblocking(true)?;
        // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open while registered.
        Ok(Stamped(unsafe { AsyncFd::register(std) }?))
    }

    /// Reads what is there into `buf`'s spare capacity (reserve first): the byte count and the
    /// kernel's receive time of the data, in microseconds, when it gave one.
    pub async fn read(&self, buf: &mut Vec<u8>) -> std::io::Result<(usize, Option<u64>)> {
        loop {
            let mut guard = self.0.readable().await?;
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            match guard.try_io(|s| recv_stamped(s.as_raw_fd(), spare.as_mut_ptr().cast(), room)) {
                Ok(Ok((n, ts))) => {
                    if n < room {
                        guard.clear_ready();
                    }
                    // SAFETY: `recv_stamped` initialised `n` bytes of the spare capacity.
                    unsafe { buf.set_len(buf.len() + n) };
                    return Ok((n, ts));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` (the ws bench's clients; the floor bench's only read).
    #[allow(dead_code)]
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|s| (&mut s.get_ref()).write(data)) {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// `recvmsg` into `buf`, with the kernel's receive time of the data (`SCM_TIMESTAMPNS`, wall
/// clock, microseconds) when it gave one.
fn recv_stamped(
    fd: libc::c_int,
    buf: *mut u8,
    len: usize,
) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    let mut control = [0u64; 16];
    // SAFETY: zeroed msghdr, then pointed at live buffers of the stated sizes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above; the kernel writes at most the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ts = None;
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ts = Some(t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, ts))
}
