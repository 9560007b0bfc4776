use edgeplane_scheduler::{sim, Catalog, SimConfig, POLICIES};

#[test]
fn print_table() {
    let cat = Catalog::embedded();
    for sc in [
        "VR_gaming",
        "AR_gaming",
        "social_interactionA",
        "outdoor_activity_A",
        "AR_Assistant",
    ] {
        for p in POLICIES {
            let mut c = SimConfig::new(sc, "Dual_4K_WS_OS", p);
            c.duration_ms = 1000.0;
            let r = sim::run(cat, &c).unwrap();
            eprintln!(
                "{sc:22} {p:9} ux={:10.3} miss={:.3} drop={} late={} E={:.0} score={:.1}",
                r.report.uxcost,
                r.report.miss_rate,
                r.report.dropped,
                r.report.late,
                r.report.energy_mj,
                r.report.overall_score
            );
        }
    }
}
