//! The worker's CPU kernels: convolution as tiled im2col + one GEMM per tile (the `gemm`
//! crate's AVX2/AVX-512 microkernels), with the bias, the residual addition and the ReLU fused
//! around the GEMM instead of separate passes over the tensor.
//!
//! Layout: activations are stored channel-major over the batch, `[C, B, H, W]` ("CBHW"). A
//! convolution is then one matrix product `W[Cout, Cin·k·k] × col[Cin·k·k, B·Ho·Wo]` whose result
//! *is* the next activation in the same layout, for every image of the batch at once (no
//! per-image GEMMs, no transposes between layers), and a 1×1 stride-1 convolution needs no
//! im2col at all (the activation is already the column matrix). Weights are flattened once at
//! load (`[Cout, Cin·k·k]`, batch norm folded in by the caller), never per pass.
//!
//! Every kernel runs on the rayon pool it is called in (the worker installs one with
//! `--threads` threads): the GEMM splits its output blocks over it, im2col, pooling and the
//! element-wise epilogues split rows or planes over it.

use rayon::prelude::*;

/// An activation `[C, B, H, W]`, contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub c: usize,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Act {
    /// From the protocol's `[B, C, H, W]` (NCHW) order.
    pub fn from_nchw(b: usize, c: usize, h: usize, w: usize, x: &[f32]) -> Act {
        assert_eq!(x.len(), b * c * h * w, "NCHW input length");
        let hw = h * w;
        let mut data = vec![0f32; x.len()];
        data.par_chunks_mut(hw).enumerate().for_each(|(i, dst)| {
            let (ci, bi) = (i / b, i % b);
            dst.copy_from_slice(&x[(bi * c + ci) * hw..][..hw]);
        });
        Act { c, b, h, w, data }
    }

    fn plane(&self, ci: usize, bi: usize) -> &[f32] {
        let hw = self.h * self.w;
        &self.data[(ci * self.b + bi) * hw..][..hw]
    }
}

/// One matrix product `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` on strided slices.
struct MatMul<'a> {
    m: usize,
    n: usize,
    k: usize,
    lhs: &'a [f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &'a [f32],
    rhs_rs: usize,
    rhs_cs: usize,
    dst: &'a mut [f32],
    dst_rs: usize,
}

/// The highest index a `rows × cols` matrix with strides `rs`, `cs` touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl MatMul<'_> {
    /// `dst += lhs · rhs` (`dst` holds the bias and any residual beforehand).
    #[allow(unsafe_code)]
    fn accumulate(self) {
        assert!(extent(self.m, self.k, self.lhs_rs, self.lhs_cs) <= self.lhs.len());
        assert!(extent(self.k, self.n, self.rhs_rs, self.rhs_cs) <= self.rhs.len());
        assert!(extent(self.m, self.n, self.dst_rs, 1) <= self.dst.len());
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return;
        }
        // SAFETY: the three asserts above keep every element the product reads or writes
        // inside its slice; `dst` is a unique borrow, so it aliases neither operand; strides
        // are small non-negative values (tensor dimensions), so the casts cannot wrap.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst.as_mut_ptr(),
                1,
                self.dst_rs as isize,
                true,
                self.lhs.as_ptr(),
                self.lhs_cs as isize,
                self.lhs_rs as isize,
                self.rhs.as_ptr(),
                self.rhs_cs as isize,
                self.rhs_rs as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
    }
}

/// Largest im2col tile, in floats (8 MB): bounds memory for VGG16's 224×224 layers at
/// batch 8 (untiled, one layer's columns would be 0.9 GB) and keeps a tile cache-friendly.
const TILE_FLOATS: usize = 1 << 21;

/// A 2-D convolution with its bias (batch norm already folded in).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// `[cout, cin·k·k]`, torch's `[cout, cin, k, k]` order.
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// What to fuse after a convolution's GEMM.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Added before the ReLU (a ResNet shortcut), same shape as the output.
    pub residual: Option<&'a Act>,
    pub relu: bool,
}

impl Conv2d {
    pub fn new(
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
        w: Vec<f32>,
        bias: Vec<f32>,
    ) -> Conv2d {
        assert_eq!(w.len(), cout * cin * k * k, "conv weight length");
        assert_eq!(bias.len(), cout, "conv bias length");
        assert!(stride >= 1 && k >= 1);
        Conv2d {
            cin,
            cout,
            k,
            stride,
            pad,
            w,
            bias,
        }
    }

    /// Fold a per-channel affine map `y -> s·y + t` (`f(channel) = (s, t)`, a batch norm)
    /// into the weights and bias.
    pub fn fold_affine(&mut self, f: impl Fn(usize) -> (f32, f32)) {
        let per = self.cin * self.k * self.k;
        for co in 0..self.cout {
            let (s, t) = f(co);
            self.w[co * per..][..per].iter_mut().for_each(|v| *v *= s);
            self.bias[co] = self.bias[co] * s + t;
        }
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let o = |i: usize| (i + 2 * self.pad - self.k) / self.stride + 1;
        (o(h), o(w))
    }

    /// `epilogue(conv(x) + bias)`.
    pub fn forward(&self, x: &Act, ep: Epilogue<'_>) -> Act {
        assert_eq!(x.c, self.cin, "conv input channels");
        let (ho, wo) = self.out_hw(x.h, x.w);
        let n = x.b * ho * wo;
        if let Some(r) = ep.residual {
            assert_eq!(
                (r.c, r.b, r.h, r.w),
                (self.cout, x.b, ho, wo),
                "residual shape"
            );
        }
        let mut out = vec![0f32; self.cout * n];
        out.par_chunks_mut(n.max(1))
            .zip(self.bias.par_iter())
            .enumerate()
            .for_each(|(co, (row, &b))| match ep.residual {
                Some(r) => {
                    for (o, &s) in row.iter_mut().zip(&r.data[co * n..][..n]) {
                        *o = s + b;
                    }
                }
                None => row.fill(b),
            });
        let kk = self.cin * self.k * self.k;
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            MatMul {
                m: self.cout,
                n,
                k: kk,
                lhs: &self.w,
                lhs_rs: kk,
                lhs_cs: 1,
                rhs: &x.data,
                rhs_rs: n,
                rhs_cs: 1,
                dst: &mut out,
                dst_rs: n,
            }
            .accumulate();
        } else {
            self.tiled(x, (ho, wo), &mut out);
        }
        if ep.relu {
            relu(&mut out);
        }
        Act {
            c: self.cout,
            b: x.b,
            h: ho,
            w: wo,
            data: out,
        }
    }

    /// im2col over tiles of output rows (`(b, oy)` pairs, whose columns are contiguous in
    /// the output), one GEMM per tile.
    fn tiled(&self, x: &Act, (ho, wo): (usize, usize), out: &mut [f32]) {
        let kk = self.cin * self.k * self.k;
        let n = x.b * ho * wo;
        let rows = x.b * ho;
        let per_tile = (TILE_FLOATS / (kk * wo)).clamp(1, rows);
        let mut col = vec![0f32; kk * per_tile * wo];
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + per_tile).min(rows);
            let nt = (r1 - r0) * wo;
            let col = &mut col[..kk * nt];
            self.im2col(x, (ho, wo), r0..r1, col);
            MatMul {
                m: self.cout,
                n: nt,
                k: kk,
                lhs: &self.w,
                lhs_rs: kk,
                lhs_cs: 1,
                rhs: col,
                rhs_rs: nt,
                rhs_cs: 1,
                dst: &mut out[r0 * wo..],
                dst_rs: n,
            }
            .accumulate();
            r0 = r1;
        }
    }

    /// `col[(ci, ky, kx)][(row, ox)]` for output rows `rows` (row = b·Ho + oy), zero padding.
    fn im2col(
        &self,
        x: &Act,
        (ho, wo): (usize, usize),
        rows: std::ops::Range<usize>,
        col: &mut [f32],
    ) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let nt = rows.len() * wo;
        col.par_chunks_mut(nt).enumerate().for_each(|(r, dst)| {
            let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            for (t, row) in rows.clone().enumerate() {
                let (bi, oy) = (row / ho, row % ho);
                let d = &mut dst[t * wo..][..wo];
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= x.h as isize {
                    d.fill(0.0);
                    continue;
                }
                let src = &x.plane(ci, bi)[iy as usize * x.w..][..x.w];
                im2col_row(src, d, s, kx, p);
            }
        });
    }
}

/// One output row of im2col: `d[ox] = src[ox·s + kx − p]`, zero outside `src`.
fn im2col_row(src: &[f32], d: &mut [f32], s: usize, kx: usize, p: usize) {
    let w = src.len();
    if s == 1 {
        let lo = p.saturating_sub(kx).min(d.len());
        let hi = (w + p).saturating_sub(kx).clamp(lo, d.len());
        d[..lo].fill(0.0);
        d[hi..].fill(0.0);
        d[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
        return;
    }
    for (ox, v) in d.iter_mut().enumerate() {
        let ix = (ox * s + kx) as isize - p as isize;
        *v = if ix >= 0 && (ix as usize) < w {
            src[ix as usize]
        } else {
            0.0
        };
    }
}

pub fn relu(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(|c| {
        for v in c {
            *v = v.max(0.0);
        }
    });
}

/// Max pooling, `-inf` padding (torch's semantics).
pub fn max_pool(x: &Act, k: usize, s: usize, p: usize) -> Act {
    let o = |i: usize| (i + 2 * p - k) / s + 1;
    let (ho, wo) = (o(x.h), o(x.w));
    let mut data = vec![0f32; x.c * x.b * ho * wo];
    data.par_chunks_mut(ho * wo)
        .enumerate()
        .for_each(|(i, dst)| {
            let src = &x.data[i * x.h * x.w..][..x.h * x.w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * s + kx) as isize - p as isize;
                            if ix >= 0 && (ix as usize) < x.w {
                                m = m.max(src[iy as usize * x.w + ix as usize]);
                            }
                        }
                    }
                    dst[oy * wo + ox] = m;
                }
            }
        });
    Act {
        c: x.c,
        b: x.b,
        h: ho,
        w: wo,
        data,
    }
}

/// torch's `AdaptiveAvgPool2d((o, o))` followed by `flatten(1)`: `[B, C·o·o]` row-major.
/// `o = 1` is the ResNets' global average pool.
pub fn adaptive_avg_flat(x: &Act, o: usize) -> Vec<f32> {
    let f = x.c * o * o;
    let mut out = vec![0f32; x.b * f];
    out.par_chunks_mut(f).enumerate().for_each(|(bi, row)| {
        for ci in 0..x.c {
            let src = x.plane(ci, bi);
            for i in 0..o {
                let (h0, h1) = ((i * x.h) / o, ((i + 1) * x.h).div_ceil(o));
                for j in 0..o {
                    let (w0, w1) = ((j * x.w) / o, ((j + 1) * x.w).div_ceil(o));
                    let mut s = 0f32;
                    for yy in h0..h1 {
                        s += src[yy * x.w + w0..yy * x.w + w1].iter().sum::<f32>();
                    }
                    row[(ci * o + i) * o + j] = s / ((h1 - h0) * (w1 - w0)) as f32;
                }
            }
        }
    });
    out
}

/// A fully-connected layer, torch's `(out, in)` weight.
#[derive(Debug, Clone)]
pub struct Linear {
    pub inp: usize,
    pub out: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    pub fn new(inp: usize, out: usize, w: Vec<f32>, bias: Vec<f32>) -> Linear {
        assert_eq!(w.len(), inp * out, "linear weight length");
        assert_eq!(bias.len(), out, "linear bias length");
        Linear { inp, out, w, bias }
    }

    /// `x[B, in] → [B, out]`, row-major, optional fused ReLU.
    pub fn forward(&self, x: &[f32], relu_after: bool) -> Vec<f32> {
        let b = x.len() / self.inp;
        assert_eq!(b * self.inp, x.len(), "linear input length");
        let mut y: Vec<f32> = (0..b).flat_map(|_| self.bias.iter().copied()).collect();
        MatMul {
            m: b,
            n: self.out,
            k: self.inp,
            lhs: x,
            lhs_rs: self.inp,
            lhs_cs: 1,
            rhs: &self.w,
            rhs_rs: 1,
            rhs_cs: self.inp,
            dst: &mut y,
            dst_rs: self.out,
        }
        .accumulate();
        if relu_after {
            relu(&mut y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition of a convolution, loop by loop (NCHW, zero padding).
    fn conv_naive(
        x: &[f32],
        (b, c, h, w): (usize, usize, usize, usize),
        wt: &[f32],
        (co, k, s, p): (usize, usize, usize, usize),
    ) -> Vec<f32> {
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut y = vec![0f32; b * co * ho * wo];
        for bi in 0..b {
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0f32;
                        for ci in 0..c {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * s + ky) as isize - p as isize;
                                    let ix = (ox * s + kx) as isize - p as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    acc += x[((bi * c + ci) * h + iy as usize) * w + ix as usize]
                                        * wt[((o * c + ci) * k + ky) * k + kx];
                                }
                            }
                        }
                        y[((bi * co + o) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn to_nchw(a: &Act) -> Vec<f32> {
        let hw = a.h * a.w;
        let mut v = vec![0f32; a.data.len()];
        for ci in 0..a.c {
            for bi in 0..a.b {
                v[(bi * a.c + ci) * hw..][..hw].copy_from_slice(a.plane(ci, bi));
            }
        }
        v
    }

    fn vals(n: usize, m: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + 11) % m) as f32 / m as f32 - 0.5)
            .collect()
    }

    #[test]
    fn conv_matches_the_definition_for_every_kernel_shape() {
        // (cin, cout, k, stride, pad) of every convolution kind in ResNet and VGG.
        for &(c, co, k, s, p) in &[
            (3, 4, 7, 2, 3),
            (5, 6, 3, 1, 1),
            (5, 6, 3, 2, 1),
            (5, 6, 1, 1, 0),
            (5, 6, 1, 2, 0),
        ] {
            let (b, h, w) = (3, 9, 11);
            let x = vals(b * c * h * w, 97);
            let wt = vals(co * c * k * k, 89);
            let bias: Vec<f32> = (0..co).map(|i| i as f32 * 0.25 - 0.5).collect();
            let conv = Conv2d::new((c, co, k), s, p, wt.clone(), bias.clone());
            let xa = Act::from_nchw(b, c, h, w, &x);
            let y = conv.forward(
                &xa,
                Epilogue {
                    residual: None,
                    relu: true,
                },
            );
            let mut want = conv_naive(&x, (b, c, h, w), &wt, (co, k, s, p));
            let hw = y.h * y.w;
            for (i, v) in want.iter_mut().enumerate() {
                *v = (*v + bias[(i / hw) % co]).max(0.0);
            }
            let got = to_nchw(&y);
            assert_eq!(got.len(), want.len());
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "k{k} s{s}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn residual_is_added_before_the_relu() {
        let conv = Conv2d::new((1, 1, 1), 1, 0, vec![2.0], vec![1.0]);
        let x = Act::from_nchw(1, 1, 1, 3, &[1.0, -1.0, -3.0]);
        let r = Act::from_nchw(1, 1, 1, 3, &[0.5, 0.5, 0.5]);
        let y = conv.forward(
            &x,
            Epilogue {
                residual: Some(&r),
                relu: true,
            },
        );
        // 2x + 1 + 0.5, then ReLU: 3.5, -0.5 -> 0, -4.5 -> 0.
        assert_eq!(y.data, vec![3.5, 0.0, 0.0]);
    }

    #[test]
    fn pools_follow_torch() {
        // 4x4 ramp; MaxPool2d(3, 2, 1) -> [[5, 7], [13, 15]].
        let x = Act::from_nchw(1, 1, 4, 4, &(0..16).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(max_pool(&x, 3, 2, 1).data, vec![5.0, 7.0, 13.0, 15.0]);
        // AdaptiveAvgPool2d(3) of [[0,1],[2,3]] = [[0,.5,1],[1,1.5,2],[2,2.5,3]].
        let x = Act::from_nchw(1, 1, 2, 2, &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            adaptive_avg_flat(&x, 3),
            vec![0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]
        );
    }

    #[test]
    fn linear_is_x_times_w_transposed_plus_bias() {
        // W = [[1, 2], [3, 4], [5, 6]] (out 3, in 2), b = [0, 1, 2]; x = [[1, 1], [0, 2]].
        let l = Linear::new(2, 3, vec![1., 2., 3., 4., 5., 6.], vec![0., 1., 2.]);
        assert_eq!(
            l.forward(&[1., 1., 0., 2.], false),
            vec![3., 8., 13., 4., 9., 14.]
        );
    }
}
