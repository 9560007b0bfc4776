//! Energy measurement where the hardware allows it.
//!
//! - CPU: RAPL through Linux powercap (`/sys/class/powercap/intel-rapl:N/energy_uj`, the package
//!   domains), when readable (it is root-only on most kernels since 2020). A job's energy is the
//!   package-energy delta over its execution on the worker, so it includes whatever else the
//!   package ran meanwhile: an upper bound for the job, exact for the box.
//! - GPU: NVML's total-energy counter per GPU (read by discovery, `total_energy_j`), split
//!   between partitions by busy-time share.
//! - Otherwise modelled (the cost table's energy), and every report says which ([`Source`]).

use std::path::{Path, PathBuf};

/// Where an energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rapl,
    Nvml,
    Modelled,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rapl => "rapl",
            Source::Nvml => "nvml",
            Source::Modelled => "modelled",
        }
    }
}

/// The package domains of RAPL, when readable.
#[derive(Debug, Clone)]
pub struct Rapl {
    domains: Vec<(PathBuf, u64)>,
}

impl Rapl {
    /// Open the package domains under `root` (normally `/sys/class/powercap`); `None` when there
    /// are none or they are not readable.
    pub fn open(root: &Path) -> Option<Rapl> {
        let mut domains = Vec::new();
        for e in std::fs::read_dir(root).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Package domains are intel-rapl:N (sub-domains are intel-rapl:N:M).
            if name.starts_with("intel-rapl:") && name.matches(':').count() == 1 {
                let p = e.path();
                let max = std::fs::read_to_string(p.join("max_energy_range_uj"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                if read_uj(&p.join("energy_uj")).is_some() {
                    domains.push((p.join("energy_uj"), max));
                }
            }
        }
        (!domains.is_empty()).then_some(Rapl { domains })
    }

    pub fn system() -> Option<Rapl> {
        Self::open(Path::new("/sys/class/powercap"))
    }

    /// Current counters (µJ), one per domain.
    pub fn read(&self) -> Vec<u64> {
        self.domains
            .iter()
            .map(|(p, _)| read_uj(p).unwrap_or(0))
            .collect()
    }

    /// Energy in mJ between two readings (handles counter wrap-around).
    pub fn delta_mj(&self, a: &[u64], b: &[u64]) -> f64 {
        self.domains
            .iter()
            .zip(a.iter().zip(b))
            .map(|((_, max), (&x, &y))| {
                if y >= x {
                    (y - x) as f64
                } else {
                    (max.saturating_sub(x) + y) as f64
                }
            })
            .sum::<f64>()
            / 1000.0
    }
}

fn read_uj(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rapl_reads_package_domains_and_wraps() {
        let d = tempfile::tempdir().unwrap();
        let pkg = d.path().join("intel-rapl:0");
        let sub = d.path().join("intel-rapl:0:0");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(pkg.join("energy_uj"), "1000\n").unwrap();
        std::fs::write(pkg.join("max_energy_range_uj"), "5000\n").unwrap();
        std::fs::write(sub.join("energy_uj"), "7\n").unwrap();
        let r = Rapl::open(d.path()).expect("package domain found");
        assert_eq!(r.read(), vec![1000]);
        assert_eq!(r.delta_mj(&[1000], &[3000]), 2.0);
        assert_eq!(
            r.delta_mj(&[4000], &[1000]),
            2.0,
            "wrap at max_energy_range_uj"
        );
        assert!(Rapl::open(&d.path().join("none")).is_none());
    }
}
