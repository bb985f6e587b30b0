//! Kernel receive times for the benches' subscriber swarms: `SO_TIMESTAMPNS` on a socket, then
//! `recvmsg` with the time the kernel queued the data on it (wall clock), the moment the bytes
//! reached the subscriber, apart from when the swarm's one thread got round to reading them.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds (the clock the kernel's receive times use).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Turns receive timestamps on.
pub fn enable(tcp: &tokio::net::TcpStream) -> std::io::Result<RawFd> {
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
    Ok(fd)
}

/// Reads what is there into `buf`'s spare capacity (reserve first): the byte count and the
/// kernel's receive time of the data, in microseconds, when it gave one.
pub async fn read(
    tcp: &tokio::net::TcpStream,
    fd: RawFd,
    buf: &mut Vec<u8>,
) -> std::io::Result<(usize, Option<u64>)> {
    loop {
        tcp.readable().await?;
        let spare = buf.spare_capacity_mut();
        match tcp.try_io(tokio::io::Interest::READABLE, || {
            recv_stamped(fd, spare.as_mut_ptr().cast(), spare.len())
        }) {
            Ok((n, ts)) => {
                // SAFETY: `recv_stamped` initialised `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok((n, ts));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
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
