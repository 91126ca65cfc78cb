//! Which device nodes a container may use, and the cgroup v2 program that enforces it.
//!
//! Cgroup v1 enforces the rules through the devices controller (libcontainer writes them from
//! the runtime spec, [`restrict_v1`] takes out the rules it adds of its own). Cgroup v2 has no such controller: a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program attached to the container's cgroup decides each open and mknod. The program is
//! built here from the same rules, a short allow list with everything else denied.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crius_proto::ContainerSpec;

/// A device type a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

/// Access a rule allows: a set of [`READ`], [`WRITE`], [`MKNOD`].
pub(crate) type Access = u8;
/// Opening for reading.
pub(crate) const READ: Access = 2;
/// Opening for writing.
pub(crate) const WRITE: Access = 4;
/// Making the node.
pub(crate) const MKNOD: Access = 1;
const RWM: Access = READ | WRITE | MKNOD;

/// One allow rule; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// The device type.
    pub kind: Option<Kind>,
    /// The major number.
    pub major: Option<u32>,
    /// The minor number.
    pub minor: Option<u32>,
    /// What the rule allows.
    pub access: Access,
}

impl Rule {
    const fn char(major: u32, minor: Option<u32>) -> Rule {
        Rule {
            kind: Some(Kind::Char),
            major: Some(major),
            minor,
            access: RWM,
        }
    }

    /// The type's letter in v1 lines and OCI entries.
    fn type_letter(&self) -> &'static str {
        match self.kind {
            Some(Kind::Char) => "c",
            Some(Kind::Block) => "b",
            None => "a",
        }
    }

    /// The line of a v1 `devices.list` (and `devices.allow`) allowing the same.
    pub(crate) fn v1(&self) -> String {
        let kind = self.type_letter();
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        format!(
            "{kind} {}:{} {}",
            number(self.major),
            number(self.minor),
            access_text(self.access)
        )
    }

    /// The OCI `linux.resources.devices` entry allowing the same.
    pub(crate) fn oci(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"allow": true, "type": self.type_letter(),
                                       "access": access_text(self.access)});
        if let Some(major) = self.major {
            v["major"] = major.into();
        }
        if let Some(minor) = self.minor {
            v["minor"] = minor.into();
        }
        v
    }
}

/// The devices every unprivileged container may use (and make nodes of): the null, zero, full,
/// random and urandom nodes, the terminals (`/dev/tty`, `/dev/ptmx`, `/dev/pts/*`) and
/// `/dev/net/tun`. Not the host's console (5:1): a container's `/dev/console` is its own
/// terminal's pts.
pub(crate) const DEFAULT: &[Rule] = &[
    Rule::char(1, Some(3)),
    Rule::char(1, Some(5)),
    Rule::char(1, Some(7)),
    Rule::char(1, Some(8)),
    Rule::char(1, Some(9)),
    Rule::char(5, Some(0)),
    Rule::char(5, Some(2)),
    Rule::char(136, None),
    Rule::char(10, Some(200)),
];

/// Why a container's device rules cannot be enforced.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A device of the spec has a type or number no rule can name.
    #[error("device {path}: {what}")]
    Bad {
        /// The device's path in the container.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// The kernel refused the program.
    #[error("cannot load the device program: {source}")]
    Load {
        /// The errno.
        source: nix::Error,
    },
    /// The program cannot be attached to the container's cgroup.
    #[error("cannot attach the device program to cgroup {cgroup}: {source}")]
    Attach {
        /// The cgroup directory.
        cgroup: String,
        /// The errno.
        source: nix::Error,
    },
}

/// The allow rules of `spec`'s container; `None` for a privileged one, which may use every
/// device. A device it is given gets its own rule unless its permissions are empty (a CDI node
/// with permissions `none`).
pub(crate) fn rules(spec: &ContainerSpec) -> Result<Option<Vec<Rule>>, DeviceError> {
    if spec.privileged {
        return Ok(None);
    }
    let mut rules = DEFAULT.to_vec();
    for d in spec.devices.iter().filter(|d| !d.permissions.is_empty()) {
        let bad = |what: String| DeviceError::Bad {
            path: d.container_path.clone(),
            what,
        };
        let kind = match d.kind.as_str() {
            "c" | "u" => Kind::Char,
            "b" => Kind::Block,
            other => return Err(bad(format!("type {other:?} is not c, u or b"))),
        };
        let number = |n: i64, what: &str| {
            u32::try_from(n)
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| bad(format!("{what} number {n} is out of range")))
        };
        let mut access = 0;
        for c in d.permissions.chars() {
            access |= match c {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                other => return Err(bad(format!("permission {other:?} is not r, w or m"))),
            };
        }
        rules.push(Rule {
            kind: Some(kind),
            major: Some(number(d.major, "major")?),
            minor: Some(number(d.minor, "minor")?),
            access,
        });
    }
    Ok(Some(rules))
}

fn access_text(access: Access) -> String {
    [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
        .iter()
        .filter(|(bit, _)| access & bit != 0)
        .map(|(_, c)| c)
        .collect()
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    /// The opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Offset (jumps: instructions to skip; loads: bytes).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

/// Opcodes the program uses.
pub(crate) mod op {
    /// `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61;
    /// `dst = src` (64 bit).
    pub const MOV_REG: u8 = 0xbf;
    /// `dst = imm` (64 bit).
    pub const MOV_IMM: u8 = 0xb7;
    /// `dst &= imm` (64 bit).
    pub const AND_IMM: u8 = 0x57;
    /// `dst >>= imm` (64 bit).
    pub const RSH_IMM: u8 = 0x77;
    /// `if dst != imm: pc += off`.
    pub const JNE_IMM: u8 = 0x55;
    /// Return `r0`.
    pub const EXIT: u8 = 0x95;
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The device program allowing what `rules` allow and denying the rest. The context
/// (`struct bpf_cgroup_dev_ctx`) holds the type in the low and the access in the high half of
/// its first word, then the major and the minor number.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    const TYPE: u8 = 2;
    const ACCESS: u8 = 3;
    const MAJOR: u8 = 4;
    const MINOR: u8 = 5;
    const SCRATCH: u8 = 6;
    let mut p = vec![
        insn(op::LDX_W, TYPE, 1, 0, 0),
        insn(op::MOV_REG, ACCESS, TYPE, 0, 0),
        insn(op::AND_IMM, TYPE, 0, 0, 0xffff),
        insn(op::RSH_IMM, ACCESS, 0, 0, 16),
        insn(op::LDX_W, MAJOR, 1, 4, 0),
        insn(op::LDX_W, MINOR, 1, 8, 0),
    ];
    for rule in rules {
        // Each test jumps past the rest of the rule (to the next one) when it fails.
        let mut tests: Vec<Insn> = Vec::new();
        if let Some(kind) = rule.kind {
            let t = match kind {
                Kind::Block => 1,
                Kind::Char => 2,
            };
            tests.push(insn(op::JNE_IMM, TYPE, 0, 0, t));
        }
        // Numbers are below 2^31 ([`rules`] checks), so the sign-extended immediate is exact.
        for (reg, n) in [(MAJOR, rule.major), (MINOR, rule.minor)] {
            if let Some(n) = n {
                let n = i32::try_from(n).unwrap_or(i32::MAX);
                tests.push(insn(op::JNE_IMM, reg, 0, 0, n));
            }
        }
        let mut block = Vec::new();
        if rule.access & RWM != RWM {
            // Allowed only if no bit outside the rule's access is asked for.
            block.push(insn(op::MOV_REG, SCRATCH, ACCESS, 0, 0));
            block.push(insn(
                op::AND_IMM,
                SCRATCH,
                0,
                0,
                i32::from(!rule.access & RWM),
            ));
            block.push(insn(op::JNE_IMM, SCRATCH, 0, 0, 0));
        }
        let mut all = tests;
        all.append(&mut block);
        let len = all.len();
        for (i, ins) in all.iter_mut().enumerate() {
            if ins.code == op::JNE_IMM {
                // Past the remaining tests and the two instructions that allow.
                ins.off = i16::try_from(len - i - 1 + 2).unwrap_or(i16::MAX);
            }
        }
        p.extend(all);
        p.push(insn(op::MOV_IMM, 0, 0, 0, 1));
        p.push(insn(op::EXIT, 0, 0, 0, 0));
    }
    p.push(insn(op::MOV_IMM, 0, 0, 0, 0));
    p.push(insn(op::EXIT, 0, 0, 0, 0));
    p
}

/// The program's bytes as the kernel reads them (`struct bpf_insn`, little-endian host).
fn encode(program: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.push(i.code);
        out.push((i.src << 4) | (i.dst & 0x0f));
        out.extend_from_slice(&i.off.to_ne_bytes());
        out.extend_from_slice(&i.imm.to_ne_bytes());
    }
    out
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<libc::c_long, nix::Error> {
    // SAFETY: `attr` is a live, initialised `union bpf_attr` prefix of the size passed; the
    // kernel reads at most that many bytes and the pointers inside it outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(ret)
    }
}

/// A loaded device program.
#[derive(Debug)]
pub(crate) struct Program(OwnedFd);

impl Program {
    /// Loads the program for `rules` into the kernel.
    pub(crate) fn load(rules: &[Rule]) -> Result<Program, DeviceError> {
        let code = encode(&program(rules));
        let license = c"Apache-2.0";
        let mut attr = LoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(code.len() / 8).unwrap_or(u32::MAX),
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..LoadAttr::default()
        };
        attr.prog_name[..5].copy_from_slice(b"crius");
        let fd = bpf(BPF_PROG_LOAD, &attr).map_err(|source| DeviceError::Load { source })?;
        let fd = i32::try_from(fd).unwrap_or(-1);
        // SAFETY: BPF_PROG_LOAD returned a new descriptor (close-on-exec) that nothing else
        // owns.
        Ok(Program(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Attaches the program to the cgroup v2 directory `cgroup`, beside any its ancestors
    /// have (each must allow an access).
    pub(crate) fn attach(&self, cgroup: &Path) -> Result<(), DeviceError> {
        let err = |source| DeviceError::Attach {
            cgroup: cgroup.display().to_string(),
            source,
        };
        let dir = nix::fcntl::open(
            cgroup,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(err)?;
        let attr = AttachAttr {
            target_fd: u32::try_from(dir.as_raw_fd()).unwrap_or(u32::MAX),
            attach_bpf_fd: u32::try_from(self.0.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI,
        };
        bpf(BPF_PROG_ATTACH, &attr).map_err(err)?;
        Ok(())
    }
}

/// Makes the v1 devices cgroup `dir` allow exactly `rules`: libcontainer's v1 manager adds
/// rules of its own to the spec's (making any node, the host's console), which crius does not
/// give. Each entry of `devices.list` that `rules` lacks is denied again.
pub(crate) fn restrict_v1(dir: &Path, rules: &[Rule]) -> std::io::Result<()> {
    let list = std::fs::read_to_string(dir.join("devices.list"))?;
    let ours: Vec<String> = rules.iter().map(Rule::v1).collect();
    let deny = |line: &str| std::fs::write(dir.join("devices.deny"), line);
    if list.lines().any(|l| l.starts_with("a ")) {
        // Everything allowed: deny all, then allow the rules one by one.
        deny("a")?;
        for rule in &ours {
            std::fs::write(dir.join("devices.allow"), rule)?;
        }
        return Ok(());
    }
    for line in list.lines().filter(|l| !ours.iter().any(|o| o == l)) {
        deny(line)?;
    }
    Ok(())
}

/// The program of the [`DEFAULT`] rules, loaded once per monitor.
static DEFAULT_PROGRAM: std::sync::OnceLock<Program> = std::sync::OnceLock::new();

/// Loads the program of the [`DEFAULT`] rules now, on a node with a cgroup v2 hierarchy: a
/// monitor started ahead of its pod does, so the kernel's check of the program (~0.3 ms here)
/// stays off its containers' start. A failure is left for [`enforce`] to report.
pub(crate) fn preload() {
    if !crate::cgroup::v2_mounts().is_empty()
        && let Ok(p) = Program::load(DEFAULT)
    {
        let _ = DEFAULT_PROGRAM.set(p);
    }
}

/// Attaches the program of `rules` to the cgroup v2 directory `cgroup` (the [`DEFAULT`] one
/// loaded once per monitor).
pub(crate) fn enforce(rules: &[Rule], cgroup: &Path) -> Result<(), DeviceError> {
    if rules != DEFAULT {
        return Program::load(rules)?.attach(cgroup);
    }
    if let Some(p) = DEFAULT_PROGRAM.get() {
        return p.attach(cgroup);
    }
    let p = Program::load(rules)?;
    p.attach(cgroup)?;
    let _ = DEFAULT_PROGRAM.set(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` as the kernel would on a device access; true if it allows it.
    fn run(program: &[Insn], kind: Kind, access: Access, major: u32, minor: u32) -> bool {
        let ctx: [u32; 3] = [
            (u32::from(access) << 16) | if kind == Kind::Block { 1 } else { 2 },
            major,
            minor,
        ];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = program[pc];
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            pc += 1;
            match i.code {
                op::LDX_W => {
                    assert_eq!(s, 1, "loads read the context");
                    r[d] = u64::from(ctx[usize::try_from(i.off).expect("offset") / 4]);
                }
                op::MOV_REG => r[d] = r[s],
                op::MOV_IMM => r[d] = i64::from(i.imm).cast_unsigned(),
                op::AND_IMM => r[d] &= i64::from(i.imm).cast_unsigned(),
                op::RSH_IMM => r[d] >>= i.imm,
                op::JNE_IMM => {
                    if r[d] != i64::from(i.imm).cast_unsigned() {
                        pc = pc.checked_add_signed(isize::from(i.off)).expect("jump");
                    }
                }
                op::EXIT => return r[0] == 1,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn spec() -> ContainerSpec {
        crate::ocispec::tests::spec()
    }

    #[test]
    fn the_default_program_allows_the_standard_nodes_and_denies_the_rest() {
        let rules = rules(&spec()).expect("rules").expect("unprivileged");
        let p = program(&rules);
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
            assert!(
                run(&p, Kind::Char, READ | WRITE, major, minor),
                "{major}:{minor}"
            );
        }
        assert!(run(&p, Kind::Char, READ, 136, 42), "any pts");
        assert!(run(&p, Kind::Char, READ | WRITE, 10, 200), "tun");
        assert!(
            run(&p, Kind::Char, MKNOD, 1, 3),
            "a node of an allowed device"
        );
        assert!(
            !run(&p, Kind::Block, MKNOD, 254, 0),
            "a node of the host's disk"
        );
        assert!(!run(&p, Kind::Char, MKNOD, 1, 11));
        assert!(
            !run(&p, Kind::Char, READ | WRITE, 5, 1),
            "the host's console"
        );
        assert!(!run(&p, Kind::Block, READ, 254, 0), "the host's disk");
        assert!(!run(&p, Kind::Block, MKNOD | READ, 254, 0));
        assert!(!run(&p, Kind::Char, WRITE, 1, 11), "the kernel log");
        assert!(!run(&p, Kind::Char, READ, 1, 1), "memory");
        assert!(!run(&p, Kind::Block, READ, 1, 3), "type matters");
        assert!(!run(&p, Kind::Char, READ, 10, 201));
        assert!(!run(&p, Kind::Char, READ, 1 << 20, 3));
    }

    #[test]
    fn a_given_device_gets_what_its_permissions_say() {
        let mut spec = spec();
        let node = |kind: &str, major, minor, permissions: &str| crius_proto::DeviceSpec {
            container_path: "/dev/x".into(),
            kind: kind.into(),
            major,
            minor,
            file_mode: 0o600,
            permissions: permissions.into(),
            uid: None,
            gid: None,
        };
        spec.devices = vec![node("b", 8, 16, "r"), node("c", 4, 64, "")];
        let p = program(&rules(&spec).expect("rules").expect("unprivileged"));
        assert!(run(&p, Kind::Block, READ, 8, 16));
        assert!(!run(&p, Kind::Block, WRITE, 8, 16), "read only");
        assert!(!run(&p, Kind::Block, READ, 8, 17));
        assert!(
            !run(&p, Kind::Char, READ, 4, 64),
            "permissions none: no rule"
        );

        spec.devices = vec![node("x", 1, 1, "r")];
        assert!(matches!(rules(&spec), Err(DeviceError::Bad { .. })));
        spec.devices = vec![node("c", -1, 1, "r")];
        assert!(matches!(rules(&spec), Err(DeviceError::Bad { .. })));
        spec.devices = vec![node("c", 1 << 31, 1, "r")];
        assert!(matches!(rules(&spec), Err(DeviceError::Bad { .. })));
        spec.devices = vec![node("c", 1, 1, "rx")];
        assert!(matches!(rules(&spec), Err(DeviceError::Bad { .. })));
    }

    #[test]
    fn a_privileged_container_has_no_rules() {
        let mut spec = spec();
        spec.privileged = true;
        assert!(rules(&spec).expect("rules").is_none());
    }

    #[test]
    fn rules_read_as_oci_entries_and_v1_lines() {
        let mknod_any = Rule {
            kind: Some(Kind::Block),
            major: None,
            minor: None,
            access: MKNOD,
        };
        assert_eq!(
            mknod_any.oci(),
            serde_json::json!({"allow": true, "type": "b", "access": "m"})
        );
        assert_eq!(mknod_any.v1(), "b *:* m");
        assert_eq!(Rule::char(136, None).v1(), "c 136:* rwm");
        assert_eq!(DEFAULT[0].v1(), "c 1:3 rwm");
        assert_eq!(
            Rule::char(136, None).oci(),
            serde_json::json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})
        );
    }

    #[test]
    fn instructions_encode_as_struct_bpf_insn() {
        let bytes = encode(&[insn(op::LDX_W, 4, 1, 4, 0), insn(op::JNE_IMM, 2, 0, 3, -1)]);
        assert_eq!(
            bytes,
            [
                0x61, 0x14, 4, 0, 0, 0, 0, 0, //
                0x55, 0x02, 3, 0, 0xff, 0xff, 0xff, 0xff
            ]
        );
    }
}
