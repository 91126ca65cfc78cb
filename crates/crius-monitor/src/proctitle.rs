//! This process's argument and environment areas, which every process that can see it reads
//! as `/proc/PID/cmdline` and `/proc/PID/environ`, dumpable or not.

/// Overwrites this process's argument area with `command` and, when `environment`, its
/// environment area with nothing. The caller must have copied whatever it still needs of its
/// arguments and environment: nothing may read those areas afterwards.
pub(crate) fn overwrite(command: &[u8], environment: bool) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised command name start at field 3; arg_start, arg_end,
    // env_start and env_end are fields 48 to 51.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<usize> = rest
        .split_whitespace()
        .skip(45)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let [arg_start, arg_end, env_start, env_end] = fields[..] else {
        return;
    };
    let mut areas = vec![(arg_start, arg_end, command)];
    if environment {
        areas.push((env_start, env_end, &b""[..]));
    }
    for (start, end, text) in areas {
        let Some(len) = end.checked_sub(start).filter(|l| *l > 0 && *l < (1 << 20)) else {
            continue;
        };
        // SAFETY: [start, end) is this process's own argument or environment area, mapped
        // writable in its stack; the caller has copied what it needs from it and nothing
        // reads it afterwards.
        unsafe {
            let area = start as *mut u8;
            std::ptr::write_bytes(area, 0, len);
            std::ptr::copy_nonoverlapping(text.as_ptr(), area, text.len().min(len - 1));
        }
    }
}
