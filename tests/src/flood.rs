//! A flood of junk TCP connections from a forked child running as an unprivileged user: the
//! child holds a number of connections open to a server (idle ones, ones sending a request
//! head a byte a second, ones repeating a request with a token never handed out), and opens
//! a new one at once for each the server closes.
//!
//! The test process has other threads, whose locks a forked child must never take, so the
//! child makes only async-signal-safe libc calls on memory prepared before the fork, and
//! reports through counters in a shared anonymous mapping.

use std::net::SocketAddrV4;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// What one junk connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Junk {
    /// Sends nothing.
    Idle,
    /// Sends a request head one byte a second and never finishes it.
    Slow,
    /// Sends a whole upgrade request with a well-formed token the server never handed out,
    /// again every second while the connection stays open.
    BadToken,
}

impl Junk {
    /// The kind of the `i`-th connection: 60 % idle, 20 % slow, 20 % bad token.
    pub fn nth(i: usize) -> Junk {
        match i % 10 {
            0..=5 => Junk::Idle,
            6 | 7 => Junk::Slow,
            _ => Junk::BadToken,
        }
    }
}

/// Settings of a flood.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The server.
    pub target: SocketAddrV4,
    /// How many connections the child keeps open (or opening).
    pub connections: usize,
    /// The uid the child switches to before opening anything.
    pub uid: u32,
    /// The gid the child switches to (with no supplementary groups).
    pub gid: u32,
    /// The child exits by itself after this long.
    pub lifetime: Duration,
}

/// Counters the child updates.
#[repr(C)]
#[derive(Default)]
struct Counters {
    /// 1 once the child runs as the unprivileged user, or a negative reason it stopped.
    state: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    connects: AtomicU64,
    closed_by_peer: AtomicU64,
    requests: AtomicU64,
}

/// What the child reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodStats {
    /// Connections established and not yet closed.
    pub open: u64,
    /// Most connections established at once.
    pub peak_open: u64,
    /// Connections attempted.
    pub connects: u64,
    /// Connections the server closed.
    pub closed_by_peer: u64,
    /// Bad-token requests sent.
    pub requests: u64,
}

/// Why the child stopped before opening anything (the `state` counter).
const STATE_RUNNING: u64 = 1;
const STATE_NOFILE: u64 = 2;
const STATE_SETGROUPS: u64 = 3;
const STATE_SETGID: u64 = 4;
const STATE_SETUID: u64 = 5;

/// The start of a request head the slow connections never finish.
const SLOW_HEAD: &[u8] = b"GET /exec/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: 127.0.0.1\r\n";
/// Header lines the slow connections go on with, forever.
const SLOW_MORE: &[u8] = b"X-Slow: a\r\n";
/// A complete upgrade request naming a token that was never handed out.
const BAD_TOKEN_REQUEST: &[u8] =
    b"GET /exec/BBBBBBBBBBBBBBBBBBBBBB HTTP/1.1\r\nHost: 127.0.0.1\r\n\
Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";

/// A running flood. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Flood {
    pid: libc::pid_t,
    counters: NonNull<Counters>,
}

// SAFETY: the mapping holds only atomics, shared with the child; the parent only reads it.
unsafe impl Send for Flood {}
// SAFETY: as for Send: shared references reach only the atomics.
unsafe impl Sync for Flood {}

/// One connection of the child.
#[derive(Clone, Copy)]
struct Slot {
    kind: Junk,
    fd: libc::c_int,
    connecting: bool,
    /// Bytes of the slow head sent.
    sent: usize,
    /// When (ms on the monotonic clock) to open the connection or send next.
    next: u64,
}

impl Flood {
    /// Forks the child, which switches to `uid`/`gid` and starts opening connections.
    pub fn start(config: &FloodConfig) -> anyhow::Result<Flood> {
        let need = u64::try_from(config.connections)? + 64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_max < need {
            bail!(
                "the hard limit of open files ({}) is below the {need} the flood needs",
                limit.rlim_max
            );
        }
        let size = std::mem::size_of::<Counters>();
        // SAFETY: a fresh anonymous shared mapping; zeroed memory is a valid `Counters`.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        let counters = NonNull::new(mapping.cast::<Counters>()).context("mmap returned null")?;
        let mut slots: Vec<Slot> = (0..config.connections)
            .map(|i| Slot {
                kind: Junk::nth(i),
                fd: -1,
                connecting: false,
                sent: 0,
                next: 0,
            })
            .collect();
        let mut polls = vec![
            libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            };
            config.connections
        ];
        let addr = sockaddr(config.target);
        let lifetime = u64::try_from(config.lifetime.as_millis())?;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child runs only `child_main`, which makes async-signal-safe calls on
        // memory allocated above and never returns.
        match unsafe { libc::fork() } {
            -1 => {
                // SAFETY: the mapping made above, unused elsewhere.
                unsafe { libc::munmap(mapping, size) };
                bail!("fork: {}", std::io::Error::last_os_error())
            }
            0 => {
                // SAFETY: the mapping outlives the child, which only uses atomics in it.
                let counters = unsafe { counters.as_ref() };
                child_main(
                    parent, config.uid, config.gid, need, &addr, lifetime, &mut slots, &mut polls,
                    counters,
                )
            }
            pid => Ok(Flood { pid, counters }),
        }
    }

    fn counters(&self) -> &Counters {
        // SAFETY: the mapping lives as long as `self`.
        unsafe { self.counters.as_ref() }
    }

    /// What the child reports now.
    pub fn stats(&self) -> FloodStats {
        let c = self.counters();
        FloodStats {
            open: c.open.load(Ordering::Relaxed),
            peak_open: c.peak_open.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            closed_by_peer: c.closed_by_peer.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    /// Waits until the child runs as the unprivileged user and holds `open` connections at
    /// once; an error if it stopped or `timeout` passed.
    pub async fn wait_open(&self, open: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.counters().state.load(Ordering::Relaxed) {
                0 | STATE_RUNNING => {}
                STATE_NOFILE => bail!("the flood child cannot raise its open-file limit"),
                STATE_SETGROUPS | STATE_SETGID | STATE_SETUID => {
                    bail!("the flood child cannot switch to the unprivileged user")
                }
                other => bail!("the flood child stopped ({other})"),
            }
            let stats = self.stats();
            if stats.peak_open >= open {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the flood reached only {stats:?} in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills and reaps the child (its connections close with it); the last counters.
    pub fn stop(mut self) -> FloodStats {
        self.kill();
        self.stats()
    }

    fn kill(&mut self) {
        if self.pid > 0 {
            // SAFETY: our own child, not yet reaped, so the pid cannot have been reused.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.pid = 0;
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.kill();
        // SAFETY: the mapping made in `start`; the child is gone.
        unsafe {
            libc::munmap(
                self.counters.as_ptr().cast(),
                std::mem::size_of::<Counters>(),
            )
        };
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Milliseconds on the monotonic clock.
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}

fn exit_with(counters: &Counters, state: u64) -> ! {
    counters.state.store(state, Ordering::Relaxed);
    // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
    unsafe { libc::_exit(1) }
}

/// The child: drops privileges, then keeps every slot's connection open until `lifetime`
/// passes or the parent dies.
#[allow(clippy::too_many_arguments)]
fn child_main(
    parent: libc::pid_t,
    uid: u32,
    gid: u32,
    nofile: u64,
    addr: &libc::sockaddr_in,
    lifetime: u64,
    slots: &mut [Slot],
    polls: &mut [libc::pollfd],
    counters: &Counters,
) -> ! {
    // SAFETY: (the whole function) raw system calls on memory this process owns; all are
    // async-signal-safe, and nothing allocates, locks or unwinds.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            exit_with(counters, STATE_NOFILE);
        }
        if limit.rlim_cur < nofile {
            limit.rlim_cur = nofile.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                exit_with(counters, STATE_NOFILE);
            }
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            exit_with(counters, STATE_SETGROUPS);
        }
        if libc::setgid(gid) != 0 || libc::getegid() != gid {
            exit_with(counters, STATE_SETGID);
        }
        if libc::setuid(uid) != 0 || libc::geteuid() != uid {
            exit_with(counters, STATE_SETUID);
        }
        counters.state.store(STATE_RUNNING, Ordering::Relaxed);
    }
    let end = now_ms() + lifetime;
    let mut open: u64 = 0;
    let mut buf = [0u8; 4096];
    loop {
        let now = now_ms();
        if now >= end {
            // SAFETY: see above.
            unsafe { libc::_exit(0) };
        }
        for (slot, poll) in slots.iter_mut().zip(polls.iter_mut()) {
            if slot.fd < 0 && now >= slot.next {
                open_slot(slot, addr, counters);
            }
            if slot.fd >= 0 && !slot.connecting && now >= slot.next {
                match slot.kind {
                    Junk::Idle => slot.next = u64::MAX,
                    Junk::Slow => {
                        let byte = if slot.sent < SLOW_HEAD.len() {
                            SLOW_HEAD[slot.sent]
                        } else {
                            SLOW_MORE[(slot.sent - SLOW_HEAD.len()) % SLOW_MORE.len()]
                        };
                        send_all(slot.fd, &[byte]);
                        slot.sent += 1;
                        slot.next = now + 1000;
                    }
                    Junk::BadToken => {
                        send_all(slot.fd, BAD_TOKEN_REQUEST);
                        counters.requests.fetch_add(1, Ordering::Relaxed);
                        slot.next = now + 1000;
                    }
                }
            }
            poll.fd = slot.fd;
            poll.events = if slot.connecting {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            poll.revents = 0;
        }
        // SAFETY: `polls` is a valid array of its length.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        let now = now_ms();
        for (slot, poll) in slots.iter_mut().zip(polls.iter()) {
            if slot.fd < 0 || poll.revents == 0 {
                continue;
            }
            if slot.connecting {
                let mut err: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: SO_ERROR writes one int.
                let ok = unsafe {
                    libc::getsockopt(
                        slot.fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut len,
                    )
                } == 0;
                if ok && err == 0 {
                    slot.connecting = false;
                    slot.next = now;
                    open += 1;
                    counters.open.store(open, Ordering::Relaxed);
                    counters.peak_open.fetch_max(open, Ordering::Relaxed);
                } else {
                    close_slot(slot, now);
                }
                continue;
            }
            // SAFETY: reading into a stack buffer of its length.
            let got = unsafe { libc::read(slot.fd, buf.as_mut_ptr().cast(), buf.len()) };
            let again = got < 0 && errno() == libc::EAGAIN;
            if got == 0 || (got < 0 && !again) {
                close_slot(slot, now);
                open = open.saturating_sub(1);
                counters.open.store(open, Ordering::Relaxed);
                counters.closed_by_peer.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts a non-blocking connect for `slot`.
fn open_slot(slot: &mut Slot, addr: &libc::sockaddr_in, counters: &Counters) {
    // SAFETY: plain socket calls; `addr` is a valid sockaddr_in.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            slot.next = now_ms() + 100;
            return;
        }
        counters.connects.fetch_add(1, Ordering::Relaxed);
        let r = libc::connect(
            fd,
            (addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let in_progress = r != 0 && errno() == libc::EINPROGRESS;
        if r != 0 && !in_progress {
            libc::close(fd);
            slot.next = now_ms() + 100;
            return;
        }
        slot.fd = fd;
        slot.connecting = true;
        slot.sent = 0;
    }
}

/// The calling thread's errno.
fn errno() -> libc::c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn close_slot(slot: &mut Slot, now: u64) {
    // SAFETY: the slot's own descriptor.
    unsafe { libc::close(slot.fd) };
    slot.fd = -1;
    slot.connecting = false;
    slot.next = now;
}

fn send_all(fd: libc::c_int, data: &[u8]) {
    // SAFETY: sending from a slice of its length; a short or failed send is fine for junk.
    unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
}
