use edgeplane_gpu::{policies, scenarios, sim, GpuData};
use edgeplane_planner::sim_policy::Adaptive;
fn main() {
    let data = GpuData::shipped().unwrap();
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map(|s| s.as_str()).unwrap_or("seed");
    let gpu = args.get(2).map(|s| s.as_str()).unwrap_or("Jetson-AGX-Xavier");
    let sc = if variant == "seed" { scenarios::seed(&data.profiles, gpu, 1, 500.0).unwrap() } else { scenarios::dynamic(&data.profiles, 1, 600.0).unwrap() };
    let mut pols: Vec<Box<dyn sim::PlanPolicy>> = vec![Box::new(policies::default_mps()), Box::new(policies::time_slicing()), Box::new(policies::equal_split()), Box::new(policies::Gpulet::new()), Box::new(Adaptive::default())];
    for p in pols.iter_mut() {
        let t = std::time::Instant::now();
        let r = sim::run(&data, &sc, p.as_mut(), &mut |_| {}).unwrap();
        let mut tot=0.0;
        for m in &r.models { tot+=m.goodput_rps; println!("{:13} {:8} att {:.4} p50 {:7.1} p99 {:8.1} good {:6.1} reconf {:2} E {:7.0} gap {:.2} refused {}", r.mode, m.model, m.slo_attainment(), m.p50_ms, m.p99_ms, m.goodput_rps, m.reconfigurations, m.energy_j, m.serving_gap_s, m.refused); }
        println!("  total goodput {tot:.1}  layouts {} {:?}", r.layouts.len(), t.elapsed());
        if let Some(l) = r.layouts.last() { println!("  last layout {:?}", l.partitions); }
    }
}
