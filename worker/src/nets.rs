//! ResNet18, ResNet50 and VGG16 as torchvision defines them, run on the CPU with the worker's
//! own kernels ([`crate::engine`]: im2col + GEMM with fused bias, residual and ReLU).
//!
//! The arithmetic is the real network's: every convolution, pooling, residual addition and
//! fully-connected layer of the architecture is computed in FP32. Batch-norm layers are folded
//! into the preceding convolution at load time (inference-time BN is an affine map per channel),
//! which is what inference runtimes do and changes no result beyond rounding.
//!
//! Weights: trained weights cannot be downloaded on the machines this runs on, so they come from
//! a safetensors file with torchvision's `state_dict` names when one is given, and otherwise are
//! initialised deterministically from a seed (SplitMix64 per tensor name; He-uniform convolutions, identity batch-norm,
//! uniform fully-connected layers). Seeded weights give meaningless class scores but the same
//! compute, memory traffic and latency as trained ones, which is what scheduling needs.
//!
//! A forward pass checks its [`Stop`] before every layer (each convolution, pooling stage and
//! fully-connected layer): a request whose client went away or whose deadline passed is cut at
//! the next layer boundary instead of running to the end.

use crate::engine::{self, Act, Conv2d, Epilogue};
use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unknown model {0:?}; valid: resnet18, resnet50, vgg16")]
    UnknownModel(String),
    #[error("weights file {path}: {why}")]
    Weights { path: String, why: String },
    #[error("weights: tensor {name:?}: {why}")]
    Tensor { name: String, why: String },
    #[error("compute: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("input: {got} values, expected {want} for a batch of {batch} of 3x{res}x{res}")]
    Input {
        got: usize,
        want: usize,
        batch: usize,
        res: usize,
    },
    #[error("graph: {0}")]
    Graph(String),
    #[error("cancelled after {done} of {total} layers (deadline passed or client gone)")]
    Cancelled { done: usize, total: usize },
}

/// The models this worker can run.
pub const MODELS: [&str; 3] = ["resnet18", "resnet50", "vgg16"];

/// Asked before every layer of a forward pass: `true` stops the pass there.
pub trait Stop: Sync {
    fn stop(&self) -> bool;
}

/// Never stops (benchmarks, tests).
pub struct Never;

impl Stop for Never {
    fn stop(&self) -> bool {
        false
    }
}

/// Where the weights come from.
pub enum WeightSource {
    /// torchvision `state_dict` tensors read from a safetensors file.
    File {
        path: String,
        tensors: HashMap<String, candle_core::Tensor>,
    },
    /// Deterministic initialisation: tensor `name` is drawn from SplitMix64 seeded by
    /// `seed` and the name, so a tensor never depends on load order.
    Seeded(u64),
}

impl WeightSource {
    pub fn file(path: &Path) -> Result<WeightSource, NetError> {
        let tensors =
            candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| NetError::Weights {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
        Ok(WeightSource::File {
            path: path.display().to_string(),
            tensors,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            WeightSource::File { path, .. } => format!("safetensors file {path}"),
            WeightSource::Seeded(s) => format!("seeded (seed {s}, untrained)"),
        }
    }

    /// One tensor of `shape`, flattened; `init` says how a seeded source fills it.
    fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, NetError> {
        match self {
            WeightSource::File { tensors, .. } => {
                let t = tensors.get(name).ok_or_else(|| NetError::Tensor {
                    name: name.into(),
                    why: "missing from the weights file (torchvision state_dict names expected)"
                        .into(),
                })?;
                if t.dims() != shape {
                    return Err(NetError::Tensor {
                        name: name.into(),
                        why: format!("shape {:?}, expected {shape:?}", t.dims()),
                    });
                }
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
            }
            WeightSource::Seeded(seed) => {
                let n: usize = shape.iter().product();
                Ok(match init {
                    Init::Const(c) => vec![c; n],
                    Init::Uniform(bound) => {
                        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                        for b in name.bytes() {
                            h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
                        }
                        let mut state = seed ^ h;
                        (0..n)
                            .map(|_| {
                                let u = splitmix64(&mut state) >> 40; // 24 random bits
                                (u as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
                            })
                            .collect()
                    }
                })
            }
        }
    }
}

/// SplitMix64: a tiny, fast, well-mixed generator (the seeded initialisation of 138 M VGG16
/// parameters takes well under a second).
fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy)]
enum Init {
    Const(f32),
    Uniform(f32),
}

/// Kernel shape of a convolution: (in channels, out channels, kernel size).
type Shape = (usize, usize, usize);

/// `conv` (no bias) followed by BatchNorm2d `bn` (torchvision names `{conv}.weight`,
/// `{bn}.{weight,bias,running_mean,running_var}`), the BN folded into the weights and a bias.
fn conv_bn(
    ws: &WeightSource,
    conv: &str,
    bn: &str,
    (cin, cout, k): Shape,
    stride: usize,
    pad: usize,
) -> Result<Conv2d, NetError> {
    let bound = (2.0f32 / (cout * k * k) as f32).sqrt() * 3f32.sqrt();
    let mut w = ws.get(
        &format!("{conv}.weight"),
        &[cout, cin, k, k],
        Init::Uniform(bound),
    )?;
    let g = ws.get(&format!("{bn}.weight"), &[cout], Init::Const(1.0))?;
    let beta = ws.get(&format!("{bn}.bias"), &[cout], Init::Const(0.0))?;
    let mean = ws.get(&format!("{bn}.running_mean"), &[cout], Init::Const(0.0))?;
    let var = ws.get(&format!("{bn}.running_var"), &[cout], Init::Const(1.0))?;
    let per = cin * k * k;
    let mut bias = Vec::with_capacity(cout);
    for co in 0..cout {
        let scale = g[co] / (var[co] + 1e-5).sqrt();
        w[co * per..][..per].iter_mut().for_each(|v| *v *= scale);
        bias.push(beta[co] - mean[co] * scale);
    }
    Ok(Conv2d::new((cin, cout, k), stride, pad, w, bias))
}

/// A convolution with its own bias (VGG), 3x3 stride 1.
fn conv_bias(
    ws: &WeightSource,
    name: &str,
    (cin, cout, k): Shape,
    pad: usize,
) -> Result<Conv2d, NetError> {
    let bound = (2.0f32 / (cout * k * k) as f32).sqrt() * 3f32.sqrt();
    let w = ws.get(
        &format!("{name}.weight"),
        &[cout, cin, k, k],
        Init::Uniform(bound),
    )?;
    let b = ws.get(&format!("{name}.bias"), &[cout], Init::Const(0.0))?;
    Ok(Conv2d::new((cin, cout, k), 1, pad, w, b))
}

fn linear(
    ws: &WeightSource,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<engine::Linear, NetError> {
    let bound = 1.0 / (inp as f32).sqrt();
    let w = ws.get(&format!("{name}.weight"), &[out, inp], Init::Uniform(bound))?;
    let b = ws.get(&format!("{name}.bias"), &[out], Init::Uniform(bound))?;
    Ok(engine::Linear::new(inp, out, w, b))
}

/// ResNet BasicBlock (conv3x3, conv3x3) or Bottleneck (1x1, 3x3, 1x1), plus shortcut.
struct Residual {
    convs: Vec<Conv2d>,
    down: Option<Conv2d>,
}

/// Counts layers as a pass goes and asks the [`Stop`] before each one.
struct Progress<'a> {
    stop: &'a dyn Stop,
    done: usize,
    total: usize,
}

impl Progress<'_> {
    fn layer(&mut self) -> Result<(), NetError> {
        if self.stop.stop() {
            return Err(NetError::Cancelled {
                done: self.done,
                total: self.total,
            });
        }
        self.done += 1;
        Ok(())
    }
}

const RELU: Epilogue<'static> = Epilogue {
    residual: None,
    relu: true,
};
const LINEAR: Epilogue<'static> = Epilogue {
    residual: None,
    relu: false,
};

impl Residual {
    fn layers(&self) -> usize {
        self.convs.len() + usize::from(self.down.is_some())
    }

    fn forward(&self, x: &Act, p: &mut Progress<'_>) -> Result<Act, NetError> {
        let short_owned;
        let short = match &self.down {
            Some(d) => {
                p.layer()?;
                short_owned = d.forward(x, LINEAR);
                &short_owned
            }
            None => x,
        };
        let (last, first) = self.convs.split_last().expect("a block has convolutions");
        let mut y: Option<Act> = None;
        for c in first {
            p.layer()?;
            y = Some(c.forward(y.as_ref().unwrap_or(x), RELU));
        }
        p.layer()?;
        Ok(last.forward(
            y.as_ref().unwrap_or(x),
            Epilogue {
                residual: Some(short),
                relu: true,
            },
        ))
    }
}

enum Arch {
    ResNet {
        stem: Conv2d,
        blocks: Vec<Residual>,
        fc: engine::Linear,
    },
    Vgg {
        /// `None` = 2x2 max pool.
        features: Vec<Option<Conv2d>>,
        fc: [engine::Linear; 3],
    },
}

/// One loaded network.
pub struct Net {
    pub name: String,
    arch: Arch,
    /// Multiply-accumulates per image at 224x224 (for reports).
    pub gmacs_224: f64,
}

pub const CLASSES: usize = 1000;

impl Net {
    pub fn load(name: &str, ws: &WeightSource) -> Result<Net, NetError> {
        match name {
            "resnet18" => Self::resnet(name, ws, &[2, 2, 2, 2], false, 1.82),
            "resnet50" => Self::resnet(name, ws, &[3, 4, 6, 3], true, 4.11),
            "vgg16" => Self::vgg16(ws),
            _ => Err(NetError::UnknownModel(name.into())),
        }
    }

    fn block(
        ws: &WeightSource,
        p: &str,
        (inp, planes): (usize, usize),
        stride: usize,
        bottleneck: bool,
    ) -> Result<Residual, NetError> {
        let c = |i: usize, shape: Shape, stride: usize, pad: usize| {
            conv_bn(
                ws,
                &format!("{p}.conv{i}"),
                &format!("{p}.bn{i}"),
                shape,
                stride,
                pad,
            )
        };
        let (convs, out) = if bottleneck {
            (
                vec![
                    c(1, (inp, planes, 1), 1, 0)?,
                    c(2, (planes, planes, 3), stride, 1)?,
                    c(3, (planes, planes * 4, 1), 1, 0)?,
                ],
                planes * 4,
            )
        } else {
            (
                vec![
                    c(1, (inp, planes, 3), stride, 1)?,
                    c(2, (planes, planes, 3), 1, 1)?,
                ],
                planes,
            )
        };
        let down = if stride != 1 || inp != out {
            Some(conv_bn(
                ws,
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                (inp, out, 1),
                stride,
                0,
            )?)
        } else {
            None
        };
        Ok(Residual { convs, down })
    }

    fn resnet(
        name: &str,
        ws: &WeightSource,
        layers: &[usize; 4],
        bottleneck: bool,
        gmacs: f64,
    ) -> Result<Net, NetError> {
        let stem = conv_bn(ws, "conv1", "bn1", (3, 64, 7), 2, 3)?;
        let exp = if bottleneck { 4 } else { 1 };
        let mut inp = 64;
        let mut blocks = Vec::new();
        for (li, &n) in layers.iter().enumerate() {
            let planes = 64 << li;
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let p = format!("layer{}.{bi}", li + 1);
                blocks.push(Self::block(ws, &p, (inp, planes), stride, bottleneck)?);
                inp = planes * exp;
            }
        }
        let fc = linear(ws, "fc", 512 * exp, CLASSES)?;
        Ok(Net {
            name: name.into(),
            arch: Arch::ResNet { stem, blocks, fc },
            gmacs_224: gmacs,
        })
    }

    fn vgg16(ws: &WeightSource) -> Result<Net, NetError> {
        const CFG: [usize; 18] = [
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
        ];
        let mut features = Vec::new();
        let (mut idx, mut inp) = (0, 3);
        for &c in &CFG {
            if c == 0 {
                features.push(None);
                idx += 1;
            } else {
                let name = format!("features.{idx}");
                features.push(Some(conv_bias(ws, &name, (inp, c, 3), 1)?));
                idx += 2;
                inp = c;
            }
        }
        let fc = [
            linear(ws, "classifier.0", 512 * 7 * 7, 4096)?,
            linear(ws, "classifier.3", 4096, 4096)?,
            linear(ws, "classifier.6", 4096, CLASSES)?,
        ];
        Ok(Net {
            name: "vgg16".into(),
            arch: Arch::Vgg { features, fc },
            gmacs_224: 15.47,
        })
    }

    /// Layer boundaries of one pass (where a [`Stop`] is asked): ResNet18 21, ResNet50 54,
    /// VGG16 21.
    pub fn layers(&self) -> usize {
        match &self.arch {
            Arch::ResNet { blocks, .. } => 2 + blocks.iter().map(Residual::layers).sum::<usize>(),
            Arch::Vgg { features, fc } => features.len() + fc.len(),
        }
    }

    /// Forward pass of a batch `x` (NCHW, `batch` images of 3 x `res` x `res`); returns the
    /// logits, `batch` rows of 1000.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        res: usize,
        stop: &dyn Stop,
    ) -> Result<Vec<f32>, NetError> {
        let want = batch * 3 * res * res;
        if x.len() != want || batch == 0 {
            return Err(NetError::Input {
                got: x.len(),
                want,
                batch,
                res,
            });
        }
        let mut p = Progress {
            stop,
            done: 0,
            total: self.layers(),
        };
        let x = Act::from_nchw(batch, 3, res, res, x);
        match &self.arch {
            Arch::ResNet { stem, blocks, fc } => {
                p.layer()?;
                let mut y = engine::max_pool(&stem.forward(&x, RELU), 3, 2, 1);
                for b in blocks {
                    y = b.forward(&y, &mut p)?;
                }
                p.layer()?;
                Ok(fc.forward(&engine::adaptive_avg_flat(&y, 1), false))
            }
            Arch::Vgg { features, fc } => {
                let mut y = x;
                for f in features {
                    p.layer()?;
                    y = match f {
                        Some(c) => c.forward(&y, RELU),
                        None => engine::max_pool(&y, 2, 2, 0),
                    };
                }
                let mut v = engine::adaptive_avg_flat(&y, 7);
                for (i, l) in fc.iter().enumerate() {
                    p.layer()?;
                    v = l.forward(&v, i + 1 < fc.len());
                }
                Ok(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet18_is_deterministic_and_batches() {
        let ws = WeightSource::Seeded(7);
        let net = Net::load("resnet18", &ws).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 64 * 64)
            .map(|i| ((i % 97) as f32) / 97.0)
            .collect();
        let a = net.forward(&x, 2, 64, &Never).unwrap();
        assert_eq!(a.len(), 2 * CLASSES);
        assert!(a.iter().all(|v| v.is_finite()));
        // Same seed, same weights: same output; and it is not all zeros.
        let net2 = Net::load("resnet18", &WeightSource::Seeded(7)).unwrap();
        assert_eq!(a, net2.forward(&x, 2, 64, &Never).unwrap());
        assert!(a.iter().any(|v| v.abs() > 1e-6));
        // One image of the batch alone gives that image's row.
        let r = net.forward(&x[3 * 64 * 64..], 1, 64, &Never).unwrap();
        for (u, v) in r.iter().zip(&a[CLASSES..]) {
            assert!((u - v).abs() <= 1e-3 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn a_stop_cuts_the_pass_at_a_layer_boundary() {
        struct After(std::sync::atomic::AtomicUsize);
        impl Stop for After {
            fn stop(&self) -> bool {
                // Stop when asked the 5th time: 4 layers run.
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 4
            }
        }
        let net = Net::load("resnet18", &WeightSource::Seeded(1)).unwrap();
        assert_eq!(net.layers(), 21);
        let x = vec![0.5f32; 3 * 32 * 32];
        let e = net
            .forward(&x, 1, 32, &After(Default::default()))
            .unwrap_err();
        assert!(
            matches!(e, NetError::Cancelled { done: 4, total: 21 }),
            "{e}"
        );
    }

    #[test]
    fn layer_counts_follow_the_architectures() {
        // ResNet50: stem + 16 blocks x 3 convs + 4 downsamples + fc = 1 + 48 + 4 + 1.
        let r50 = Net::load("resnet50", &WeightSource::Seeded(1)).unwrap();
        assert_eq!(r50.layers(), 54);
        // VGG16: 13 convs + 5 pools + 3 fully-connected.
        let vgg = Net::load("vgg16", &WeightSource::Seeded(1)).unwrap();
        assert_eq!(vgg.layers(), 21);
    }

    #[test]
    fn weights_file_errors_name_the_tensor() {
        let dir = std::env::temp_dir().join(format!("ep-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.safetensors");
        let t = candle_core::Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("conv1.weight".to_string(), t)]), &p)
            .unwrap();
        let ws = WeightSource::file(&p).unwrap();
        let e = Net::load("resnet18", &ws).err().unwrap().to_string();
        assert!(
            e.contains("conv1.weight") && e.contains("[64, 3, 7, 7]"),
            "{e}"
        );
    }
}
