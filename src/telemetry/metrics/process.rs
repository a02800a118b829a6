//! This process's own figures — CPU time, memory, open descriptors, start time — read from `/proc` for a scrape.

/// One sample of the process's figures: name, type, help and value.
type Sample = (&'static str, &'static str, &'static str, f64);

/// USER_HZ: the unit of /proc times, 100 on every Linux architecture cachewarden runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// This process's CPU time, memory and descriptors from `/proc` (Linux), as Prometheus text for a scrape (written
/// here rather than through the recorder, whose counters are whole numbers: CPU seconds are fractional).
pub(crate) fn process_text() -> String {
    let mut samples: Vec<Sample> = Vec::new();
    times(&mut samples);
    memory(&mut samples);
    descriptors(&mut samples);
    samples
        .iter()
        .map(|(name, kind, help, value)| format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"))
        .collect()
}

/// CPU time and start time, from `/proc/self/stat`.
fn times(samples: &mut Vec<Sample>) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        let cpu = (user + system) / TICKS_PER_SECOND;
        samples.push((
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        ));
    }
    if let (Some(started), Some(boot)) = (field(22), boot_time()) {
        let start = boot + started / TICKS_PER_SECOND;
        samples.push((
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        ));
    }
}

/// Resident and virtual memory, from `/proc/self/status` (sizes in kB as the kernel counts them: no page size
/// assumed).
fn memory(samples: &mut Vec<Sample>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib * 1024.0)
    };
    if let Some(resident) = kib("VmRSS") {
        samples.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident,
        ));
    }
    if let Some(virtual_bytes) = kib("VmSize") {
        samples.push((
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            virtual_bytes,
        ));
    }
}

/// Open descriptors and their limit, from `/proc/self/fd` and `/proc/self/limits`.
fn descriptors(samples: &mut Vec<Sample>) {
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        samples.push((
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        ));
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(max) = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse::<f64>().ok())
    {
        samples.push((
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        ));
    }
}

/// The system's boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}
