//! Figures the agent stores or reports (profile rows, latencies, energy, counters) are checked
//! here first: a figure must be a finite, positive number. A worker that does not send a
//! figure (a third-party v2 server sends no `exec_ms`), or sends NaN, infinity, zero or a
//! negative value, is refused with a typed [`FigureError`] naming the figure and why, so the
//! caller falls back to what the agent measured itself — a NaN never reaches a profile row,
//! a reply, `/metrics` or the persisted counters.

/// Which figure was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// A worker's own forward-pass time (`exec_ms` response parameter).
    WorkerExecMs,
    /// The agent's own dispatch-to-response time of one worker request.
    RoundTripMs,
    /// One timed pass, or the median, of the measured profile L(model, b).
    ProfileMs,
    /// Energy of a block (RAPL-measured or modelled), mJ.
    EnergyMj,
    /// A job's latency as the ledger counts it.
    LatencyMs,
}

impl Figure {
    pub fn as_str(self) -> &'static str {
        match self {
            Figure::WorkerExecMs => "worker exec_ms",
            Figure::RoundTripMs => "agent-measured round trip (ms)",
            Figure::ProfileMs => "profile L(model, b) (ms)",
            Figure::EnergyMj => "energy (mJ)",
            Figure::LatencyMs => "latency (ms)",
        }
    }
}

/// Why a figure was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    NotANumber,
    Infinite,
    NotPositive,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {value} refused ({})", figure.as_str(), match why {
    Why::NotANumber => "not a number",
    Why::Infinite => "infinite",
    Why::NotPositive => "not positive",
})]
pub struct FigureError {
    pub figure: Figure,
    pub value: f64,
    pub why: Why,
}

/// `v` when it is finite and > 0; otherwise the typed refusal.
pub fn check_ms(figure: Figure, v: f64) -> Result<f64, FigureError> {
    let why = if v.is_nan() {
        Why::NotANumber
    } else if v.is_infinite() {
        Why::Infinite
    } else if v <= 0.0 {
        Why::NotPositive
    } else {
        return Ok(v);
    };
    Err(FigureError {
        figure,
        value: v,
        why,
    })
}

/// For additive counters (energy, busy time), where 0 is a real value: `v` when finite and
/// >= 0; otherwise the refusal (a counter never adds NaN, infinity or a negative amount).
pub fn check_amount(figure: Figure, v: f64) -> Result<f64, FigureError> {
    if v == 0.0 {
        return Ok(0.0);
    }
    check_ms(figure, v)
}

/// `v` when acceptable to [`check_amount`], else 0 with a warning naming the figure.
pub fn amount_or_zero(figure: Figure, v: f64) -> f64 {
    check_amount(figure, v).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "figure refused: counted as 0");
        0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nan_infinite_and_non_positive_naming_the_figure() {
        assert_eq!(check_ms(Figure::ProfileMs, 2.5), Ok(2.5));
        let e = check_ms(Figure::WorkerExecMs, f64::NAN).unwrap_err();
        assert_eq!((e.figure, e.why), (Figure::WorkerExecMs, Why::NotANumber));
        assert!(e.to_string().contains("worker exec_ms"), "{e}");
        let e = check_ms(Figure::EnergyMj, f64::INFINITY).unwrap_err();
        assert_eq!(e.why, Why::Infinite);
        assert_eq!(
            check_ms(Figure::ProfileMs, 0.0).unwrap_err().why,
            Why::NotPositive
        );
        assert_eq!(
            check_ms(Figure::ProfileMs, -1.0).unwrap_err().why,
            Why::NotPositive
        );
        assert_eq!(check_amount(Figure::EnergyMj, 0.0), Ok(0.0));
        assert_eq!(amount_or_zero(Figure::EnergyMj, f64::NAN), 0.0);
        assert_eq!(amount_or_zero(Figure::EnergyMj, -3.0), 0.0);
        assert_eq!(amount_or_zero(Figure::EnergyMj, 3.0), 3.0);
    }
}
