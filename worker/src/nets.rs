//! ResNet18, ResNet50 and VGG16 as torchvision defines them, run with candle on the CPU.
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

use candle_core::{DType, Device, Tensor};
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
}

/// The models this worker can run.
pub const MODELS: [&str; 3] = ["resnet18", "resnet50", "vgg16"];

/// Where the weights come from.
pub enum WeightSource {
    /// torchvision `state_dict` tensors read from a safetensors file.
    File {
        path: String,
        tensors: HashMap<String, Tensor>,
    },
    /// Deterministic initialisation: tensor `name` is drawn from ChaCha8 seeded by
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

    /// One tensor of `shape`; `init` says how a seeded source fills it.
    fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, NetError> {
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
                Ok(t.to_dtype(DType::F32)?)
            }
            WeightSource::Seeded(seed) => {
                let n: usize = shape.iter().product();
                let data: Vec<f32> = match init {
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
                };
                Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
            }
        }
    }
}

/// SplitMix64: a tiny, fast, well-mixed generator (the seeded initialisation of 138 M VGG16
/// parameters takes well under a second even in a debug build of dependencies).
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

/// A convolution with its batch-norm folded in (or its own bias).
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
}

impl Conv {
    /// `conv` (no bias) followed by BatchNorm2d `bn`, torchvision names `{conv}.weight` and
    /// `{bn}.{weight,bias,running_mean,running_var}`.
    fn with_bn(
        ws: &WeightSource,
        conv: &str,
        bn: &str,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Conv, NetError> {
        let bound = (2.0f32 / (cout * k * k) as f32).sqrt() * 3f32.sqrt();
        let w = ws.get(
            &format!("{conv}.weight"),
            &[cout, cin, k, k],
            Init::Uniform(bound),
        )?;
        let g = ws.get(&format!("{bn}.weight"), &[cout], Init::Const(1.0))?;
        let beta = ws.get(&format!("{bn}.bias"), &[cout], Init::Const(0.0))?;
        let mean = ws.get(&format!("{bn}.running_mean"), &[cout], Init::Const(0.0))?;
        let var = ws.get(&format!("{bn}.running_var"), &[cout], Init::Const(1.0))?;
        let scale = g.div(&(var + 1e-5)?.sqrt()?)?;
        let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let b = (beta - mean.mul(&scale)?)?;
        Ok(Conv {
            w,
            b: b.reshape((1, cout, 1, 1))?,
            stride,
            pad,
        })
    }

    /// A convolution with a bias (VGG).
    fn with_bias(
        ws: &WeightSource,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        pad: usize,
    ) -> Result<Conv, NetError> {
        let bound = (2.0f32 / (cout * k * k) as f32).sqrt() * 3f32.sqrt();
        let w = ws.get(
            &format!("{name}.weight"),
            &[cout, cin, k, k],
            Init::Uniform(bound),
        )?;
        let b = ws.get(&format!("{name}.bias"), &[cout], Init::Const(0.0))?;
        Ok(Conv {
            w,
            b: b.reshape((1, cout, 1, 1))?,
            stride: 1,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, NetError> {
        Ok(x.conv2d(&self.w, self.pad, self.stride, 1, 1)?
            .broadcast_add(&self.b)?)
    }
}

struct Linear {
    /// (out, in) as torch stores it; the matmul takes its transpose as a strided view.
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn new(ws: &WeightSource, name: &str, inp: usize, out: usize) -> Result<Linear, NetError> {
        let bound = 1.0 / (inp as f32).sqrt();
        let w = ws.get(&format!("{name}.weight"), &[out, inp], Init::Uniform(bound))?;
        let b = ws.get(&format!("{name}.bias"), &[out], Init::Uniform(bound))?;
        Ok(Linear {
            w,
            b: b.reshape((1, out))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, NetError> {
        Ok(x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
    }
}

enum Block {
    /// ResNet BasicBlock (conv3x3, conv3x3) or Bottleneck (1x1, 3x3, 1x1), plus shortcut.
    Residual {
        convs: Vec<Conv>,
        down: Option<Conv>,
    },
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor, NetError> {
        let Block::Residual { convs, down } = self;
        let mut y = x.clone();
        for (i, c) in convs.iter().enumerate() {
            y = c.forward(&y)?;
            if i + 1 < convs.len() {
                y = y.relu()?;
            }
        }
        let short = match down {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + short)?.relu()?)
    }
}

/// Max pooling 3x3 stride 2 padding 1 (ResNet stem). Inputs are post-ReLU (>= 0), so zero
/// padding gives the same maximum as torch's -inf padding.
fn maxpool_stem(x: &Tensor) -> Result<Tensor, NetError> {
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    Ok(p.max_pool2d_with_stride(3, 2)?)
}

/// torch's AdaptiveAvgPool2d((o, o)).
fn adaptive_avg(x: &Tensor, o: usize) -> Result<Tensor, NetError> {
    let (_, _, h, w) = x.dims4()?;
    if h == o && w == o {
        return Ok(x.clone());
    }
    let mut rows = Vec::with_capacity(o);
    for i in 0..o {
        let (h0, h1) = ((i * h) / o, ((i + 1) * h).div_ceil(o));
        let mut cols = Vec::with_capacity(o);
        for j in 0..o {
            let (w0, w1) = ((j * w) / o, ((j + 1) * w).div_ceil(o));
            let cell = x
                .narrow(2, h0, h1 - h0)?
                .narrow(3, w0, w1 - w0)?
                .mean_keepdim(3)?
                .mean_keepdim(2)?;
            cols.push(cell);
        }
        rows.push(Tensor::cat(&cols, 3)?);
    }
    Ok(Tensor::cat(&rows, 2)?)
}

enum Arch {
    ResNet {
        stem: Conv,
        blocks: Vec<Block>,
        fc: Linear,
    },
    Vgg {
        /// `None` = 2x2 max pool.
        features: Vec<Option<Conv>>,
        fc: [Linear; 3],
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

    fn resnet(
        name: &str,
        ws: &WeightSource,
        layers: &[usize; 4],
        bottleneck: bool,
        gmacs: f64,
    ) -> Result<Net, NetError> {
        let stem = Conv::with_bn(ws, "conv1", "bn1", (3, 64, 7), 2, 3)?;
        let exp = if bottleneck { 4 } else { 1 };
        let mut inp = 64;
        let mut blocks = Vec::new();
        for (li, &n) in layers.iter().enumerate() {
            let planes = 64 << li;
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let p = format!("layer{}.{bi}", li + 1);
                let convs = if bottleneck {
                    vec![
                        Conv::with_bn(
                            ws,
                            &format!("{p}.conv1"),
                            &format!("{p}.bn1"),
                            (inp, planes, 1),
                            1,
                            0,
                        )?,
                        Conv::with_bn(
                            ws,
                            &format!("{p}.conv2"),
                            &format!("{p}.bn2"),
                            (planes, planes, 3),
                            stride,
                            1,
                        )?,
                        Conv::with_bn(
                            ws,
                            &format!("{p}.conv3"),
                            &format!("{p}.bn3"),
                            (planes, planes * 4, 1),
                            1,
                            0,
                        )?,
                    ]
                } else {
                    vec![
                        Conv::with_bn(
                            ws,
                            &format!("{p}.conv1"),
                            &format!("{p}.bn1"),
                            (inp, planes, 3),
                            stride,
                            1,
                        )?,
                        Conv::with_bn(
                            ws,
                            &format!("{p}.conv2"),
                            &format!("{p}.bn2"),
                            (planes, planes, 3),
                            1,
                            1,
                        )?,
                    ]
                };
                let down = if stride != 1 || inp != planes * exp {
                    Some(Conv::with_bn(
                        ws,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        (inp, planes * exp, 1),
                        stride,
                        0,
                    )?)
                } else {
                    None
                };
                blocks.push(Block::Residual { convs, down });
                inp = planes * exp;
            }
        }
        let fc = Linear::new(ws, "fc", 512 * exp, CLASSES)?;
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
                features.push(Some(Conv::with_bias(
                    ws,
                    &format!("features.{idx}"),
                    (inp, c, 3),
                    1,
                )?));
                idx += 2;
                inp = c;
            }
        }
        let fc = [
            Linear::new(ws, "classifier.0", 512 * 7 * 7, 4096)?,
            Linear::new(ws, "classifier.3", 4096, 4096)?,
            Linear::new(ws, "classifier.6", 4096, CLASSES)?,
        ];
        Ok(Net {
            name: "vgg16".into(),
            arch: Arch::Vgg { features, fc },
            gmacs_224: 15.47,
        })
    }

    /// Forward pass of a batch `x` of shape (N, 3, H, W); returns logits (N, 1000).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, NetError> {
        match &self.arch {
            Arch::ResNet { stem, blocks, fc } => {
                let mut y = maxpool_stem(&stem.forward(x)?.relu()?)?;
                for b in blocks {
                    y = b.forward(&y)?;
                }
                let y = y.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?;
                fc.forward(&y)
            }
            Arch::Vgg { features, fc } => {
                let mut y = x.clone();
                for f in features {
                    y = match f {
                        Some(c) => c.forward(&y)?.relu()?,
                        None => y.max_pool2d_with_stride(2, 2)?,
                    };
                }
                let y = adaptive_avg(&y, 7)?.flatten_from(1)?;
                let y = fc[0].forward(&y)?.relu()?;
                let y = fc[1].forward(&y)?.relu()?;
                fc[2].forward(&y)
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
        let x = Tensor::from_vec(
            (0..2 * 3 * 64 * 64)
                .map(|i| ((i % 97) as f32) / 97.0)
                .collect::<Vec<_>>(),
            (2, 3, 64, 64),
            &Device::Cpu,
        )
        .unwrap();
        let y = net.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, CLASSES]);
        let a: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(a.iter().all(|v| v.is_finite()));
        // Same seed, same weights: same output; and it is not all zeros.
        let net2 = Net::load("resnet18", &WeightSource::Seeded(7)).unwrap();
        let b: Vec<f32> = net2
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
        assert!(a.iter().any(|v| v.abs() > 1e-6));
        // One image of the batch alone gives that image's row.
        let one = net.forward(&x.narrow(0, 1, 1).unwrap()).unwrap();
        let r: Vec<f32> = one.flatten_all().unwrap().to_vec1().unwrap();
        for (u, v) in r.iter().zip(&a[CLASSES..]) {
            assert!((u - v).abs() <= 1e-3 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn adaptive_pool_matches_torch_on_small_maps() {
        let x = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 2))
            .unwrap();
        let y = adaptive_avg(&x, 3).unwrap();
        // torch: AdaptiveAvgPool2d(3) of [[0,1],[2,3]] = [[0,.5,1],[1,1.5,2],[2,2.5,3]]
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn weights_file_errors_name_the_tensor() {
        let dir = std::env::temp_dir().join(format!("ep-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.safetensors");
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
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
