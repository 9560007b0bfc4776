//! The core of a node with nothing it can schedule on: no simulated NPU with cost tables, no
//! GPU of the shipped profile table, no CPU worker (`--accelerators cpu`). Every job is
//! refused at once with the reason, so a client learns why instead of waiting out a deadline.

use super::{CoreError, Decisions, Input, SchedulingCore};

#[derive(Debug, Default)]
pub struct RefuseCore;

impl SchedulingCore for RefuseCore {
    fn step(&mut self, _now_ms: f64, input: Input<'_>) -> Decisions {
        match input {
            Input::Release { model, .. } => Decisions::released(Err(CoreError::NoAccelerator {
                model: model.to_string(),
            })),
            _ => Decisions::default(),
        }
    }
    fn next_wakeup_ms(&self, _now_ms: f64) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_anything_to_schedule_on_refuses_every_model_with_the_reason() {
        let mut core: Box<dyn SchedulingCore> = Box::new(RefuseCore);
        let e = core.release(0.0, "resnet18", 10.0).unwrap_err();
        assert!(
            e.to_string().contains("cannot run on any accelerator"),
            "{e}"
        );
        assert!(core.tick(0.0).is_empty());
        assert_eq!(core.next_wakeup_ms(0.0), None);
    }
}
