//! A [`Catalog`] built from typed values instead of the three text files: a hardware set-up
//! and per-layer costs, as a caller that measured its own costs (the CPU worker node's
//! profile) has them. The same checks as [`Catalog::parse`]: layers in order, every
//! accelerator of a set-up with a cost tag.

use crate::catalog::{AccSpec, Catalog, Hardware, ModelCost};
use crate::error::Error;
use std::collections::{BTreeMap, HashMap};

/// One layer's cost on one accelerator type.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    /// Cycles at 1 GHz (1e6 cycles = 1 ms).
    pub cycles: u64,
    /// Energy in nJ.
    pub energy_nj: f64,
    /// Output activation bytes (off-chip traffic when a job migrates after this layer).
    pub out_bytes: f64,
}

#[derive(Debug, Default)]
pub struct CatalogBuilder {
    hardware: BTreeMap<String, Hardware>,
    costs: HashMap<(String, String, String), ModelCost>,
}

impl CatalogBuilder {
    pub fn new() -> CatalogBuilder {
        CatalogBuilder::default()
    }

    /// A hardware set-up `name` of `accelerators` (in simulator id order).
    pub fn hardware(mut self, name: &str, accelerators: Vec<AccSpec>) -> CatalogBuilder {
        self.hardware.insert(
            name.to_string(),
            Hardware {
                name: name.to_string(),
                accelerators,
            },
        );
        self
    }

    /// The layers of `cost_model` on accelerators of (`dataflow`, `cost_tag`), in order.
    pub fn model(
        mut self,
        cost_model: &str,
        dataflow: &str,
        cost_tag: &str,
        layers: &[LayerCost],
    ) -> CatalogBuilder {
        let mc = self
            .costs
            .entry((cost_model.into(), dataflow.into(), cost_tag.into()))
            .or_default();
        for l in layers {
            mc.layer_cycles.push(l.cycles);
            mc.layer_energy_mj.push(l.energy_nj / 1e6);
            mc.layer_out_bytes.push(l.out_bytes);
        }
        self
    }

    /// The catalogue (no scenarios).
    pub fn build(mut self) -> Result<Catalog, Error> {
        for (name, hw) in &self.hardware {
            if hw.accelerators.is_empty() {
                return Err(Error::Data {
                    what: format!("hardware {name}"),
                    why: "has no accelerators".into(),
                });
            }
        }
        for mc in self.costs.values_mut() {
            mc.finish();
        }
        Ok(Catalog {
            scenarios: BTreeMap::new(),
            hardware: self.hardware,
            costs: self.costs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(id: usize) -> AccSpec {
        AccSpec {
            id,
            name: format!("worker{id}"),
            dataflow: "CPU".into(),
            pes: 1,
            offchip_bw: 1,
            cost_tag: "worker".into(),
        }
    }

    #[test]
    fn a_built_catalogue_equals_the_parsed_text_of_the_same_costs() {
        let csv = "model,layer_index,dataflow,hw_tag,latency_cycles,energy_nj,N,K,C,Y,X,R,S\n\
                   m,0,CPU,worker,2000000,130000000,1,1,1,1,1,1,1\n";
        let hw = "[systems.worker]\naccelerators = [\n  { id = 0, name = \"worker0\", dataflow = \"CPU\", pes = 1, offchip_bw = 1, cost_tag = \"worker\" },\n]\n";
        let parsed = Catalog::parse("[scenarios]\n", hw, csv).unwrap();
        let built = CatalogBuilder::new()
            .hardware("worker", vec![acc(0)])
            .model(
                "m",
                "CPU",
                "worker",
                &[LayerCost {
                    cycles: 2_000_000,
                    energy_nj: 130_000_000.0,
                    out_bytes: 1.0,
                }],
            )
            .build()
            .unwrap();
        let (p, b) = (
            parsed.cost("m", &acc(0)).unwrap(),
            built.cost("m", &acc(0)).unwrap(),
        );
        // 2e6 cycles = 2 ms; 1.3e8 nJ = 130 mJ (65 W x 2 ms)
        assert_eq!(b.lat_ms(0, 1), 2.0);
        assert_eq!(b.energy_mj(0, 1), 130.0);
        assert_eq!(
            (
                p.layer_cycles.clone(),
                p.layer_energy_mj.clone(),
                p.layer_out_bytes.clone()
            ),
            (
                b.layer_cycles.clone(),
                b.layer_energy_mj.clone(),
                b.layer_out_bytes.clone()
            )
        );
        assert_eq!(built.hardware("worker").unwrap().accelerators.len(), 1);
    }

    #[test]
    fn a_set_up_without_accelerators_is_refused_by_name() {
        let e = CatalogBuilder::new()
            .hardware("empty", vec![])
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
