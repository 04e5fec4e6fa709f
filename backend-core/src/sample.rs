//! Sampled parameters (`[parameter_samples]`): `samples` points drawn from distributions
//! such as `uniform(0, 1)`, by plain random sampling, a Latin hypercube or a Sobol sequence.
//!
//! Every point is a pure function of (seed, index): the i-th sample is computed when it is
//! asked for, never stored, and the same seed gives the same samples on every backend and
//! in a resumed run. A Latin hypercube permutes the strata of each dimension with a keyed
//! Feistel permutation (cycle-walking into `0..samples`), so it needs no table either. A
//! Sobol sequence is Owen-scrambled from the seed (`sobol_burley`, whose direction numbers
//! are Joe and Kuo's), each coordinate jittered within its 2⁻²⁴ cell.
//!
//! One concept (about 420 lines with its tests), read top to bottom: the methods, the
//! distributions, the samples, then the arithmetic they draw on.

use crate::{Error, Params, Result, Value};

/// How the points of a sample are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Independent uniform draws per dimension.
    Random,
    /// One point in each of `samples` equal strata of every dimension.
    LatinHypercube,
    /// A scrambled Sobol sequence: low discrepancy in every projection, best with a power
    /// of two samples.
    Sobol,
}

/// The most points and dimensions of a Sobol sample (the sequence's own limits).
const SOBOL_MAX_SAMPLES: u64 = 1 << 16;
const SOBOL_MAX_DIMENSIONS: usize = 256;

impl Method {
    fn parse(text: &str) -> Result<Method> {
        match text {
            "random" => Ok(Method::Random),
            "latin_hypercube" => Ok(Method::LatinHypercube),
            "sobol" => Ok(Method::Sobol),
            other => Err(invalid(format!(
                "`method` of `parameter_samples` is `{other}`: it must be \"random\", \"latin_hypercube\" or \"sobol\""
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Random => "random",
            Method::LatinHypercube => "latin_hypercube",
            Method::Sobol => "sobol",
        }
    }
}

/// One parameter's distribution.
#[derive(Debug, Clone, PartialEq)]
enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Normal(f64, f64),
    Choice(Vec<Value>),
    /// Whole numbers `lo <= n < hi`, as numpy's `integers`.
    Integers(i64, i64),
}

fn invalid(why: impl Into<String>) -> Error {
    Error::InvalidParameters { why: why.into() }
}

impl Distribution {
    /// Parses `uniform(0, 1)`, `log_uniform(1e-4, 1)`, `normal(0, 1)`, `choice([1, 2, "a"])`,
    /// `integers(0, 10)`; the error names the parameter and says what to write.
    fn parse(name: &str, text: &str) -> Result<Distribution> {
        let usage = "write one of uniform(lo, hi), log_uniform(lo, hi), normal(mu, sigma), choice([a, b, ...]), \
                     integers(lo, hi)";
        let bad = |why: String| invalid(format!("the sampled parameter `{name}` = \"{text}\": {why}"));
        let trimmed = text.trim();
        let (function, args) = trimmed
            .strip_suffix(')')
            .and_then(|t| t.split_once('('))
            .ok_or_else(|| bad(format!("not a distribution: {usage}")))?;
        // The arguments read as a TOML array: numbers, strings, lists.
        let parsed: Params = toml::from_str(&format!("v = [{args}]"))
            .map_err(|_| bad(format!("its arguments `{args}` do not parse as numbers or a list")))?;
        let args = match parsed.get("v") {
            Some(Value::List(items)) => items.clone(),
            _ => return Err(bad(format!("its arguments `{args}` do not parse"))),
        };
        let numbers = |count: usize| -> Result<Vec<f64>> {
            let numbers: Option<Vec<f64>> = args.iter().map(Value::as_f64).collect();
            match numbers {
                Some(n) if n.len() == count && n.iter().all(|x| x.is_finite()) => Ok(n),
                _ => Err(bad(format!("`{function}` takes {count} finite numbers"))),
            }
        };
        match function.trim() {
            "uniform" | "log_uniform" => {
                let n = numbers(2)?;
                if n[0] >= n[1] {
                    return Err(bad(format!("lo ({}) must be below hi ({})", n[0], n[1])));
                }
                if function.trim() == "uniform" {
                    return Ok(Distribution::Uniform(n[0], n[1]));
                }
                if n[0] <= 0.0 {
                    return Err(bad(format!("log_uniform needs 0 < lo, not lo = {}", n[0])));
                }
                Ok(Distribution::LogUniform(n[0], n[1]))
            }
            "normal" => {
                let n = numbers(2)?;
                if n[1] <= 0.0 {
                    return Err(bad(format!("sigma must be more than 0, not {}", n[1])));
                }
                Ok(Distribution::Normal(n[0], n[1]))
            }
            "integers" => {
                let ints: Option<Vec<i64>> = args.iter().map(Value::as_i64).collect();
                match ints.as_deref() {
                    Some(&[lo, hi]) if lo < hi => Ok(Distribution::Integers(lo, hi)),
                    Some(&[lo, hi]) => Err(bad(format!("lo ({lo}) must be below hi ({hi}; hi is excluded)"))),
                    _ => Err(bad("`integers` takes two whole numbers, lo and hi (hi excluded)".into())),
                }
            }
            "choice" => match args.as_slice() {
                [Value::List(items)] if !items.is_empty() => Ok(Distribution::Choice(items.clone())),
                _ => Err(bad("`choice` takes one non-empty list, as in choice([1, 2, \"a\"])".into())),
            },
            other => Err(bad(format!("`{other}` is not a distribution: {usage}"))),
        }
    }

    /// The value at quantile `u` (0 < u < 1).
    fn at(&self, u: f64) -> Value {
        match self {
            Distribution::Uniform(lo, hi) => Value::Float(lo + u * (hi - lo)),
            Distribution::LogUniform(lo, hi) => Value::Float((lo.ln() + u * (hi.ln() - lo.ln())).exp()),
            Distribution::Normal(mu, sigma) => Value::Float(mu + sigma * inverse_normal_cdf(u)),
            Distribution::Choice(items) => {
                let i = ((u * items.len() as f64) as usize).min(items.len() - 1);
                items[i].clone()
            }
            Distribution::Integers(lo, hi) => {
                let span = hi.abs_diff(*lo);
                let offset = ((u * span as f64) as u64).min(span - 1);
                Value::Int(lo.wrapping_add_unsigned(offset))
            }
        }
    }
}

/// The sampled parameters of a space: one axis of `count` points.
#[derive(Debug, Clone)]
pub struct Samples {
    method: Method,
    count: u64,
    seed: u64,
    /// Each parameter, its distribution, and the text it was given as (for operation.toml).
    parameters: Vec<(String, Distribution, String)>,
}

impl Samples {
    /// `count` points of the given `(name, distribution text)` parameters, spread by
    /// `method` (`"random"` or `"latin_hypercube"`) from `seed`.
    pub fn new(method: &str, count: u64, seed: u64, parameters: Vec<(String, String)>) -> Result<Samples> {
        let method = Method::parse(method)?;
        if count == 0 {
            return Err(invalid("`samples` of `parameter_samples` must be at least 1"));
        }
        if parameters.is_empty() {
            return Err(invalid("`parameter_samples` names no parameter: add one such as x = \"uniform(0, 1)\""));
        }
        if method == Method::Sobol && count > SOBOL_MAX_SAMPLES {
            return Err(invalid(format!(
                "`method = \"sobol\"` draws at most {SOBOL_MAX_SAMPLES} samples, not {count}: use \"latin_hypercube\" \
                 or \"random\" for more"
            )));
        }
        if method == Method::Sobol && parameters.len() > SOBOL_MAX_DIMENSIONS {
            return Err(invalid(format!(
                "`method = \"sobol\"` samples at most {SOBOL_MAX_DIMENSIONS} parameters, not {}: use \"latin_hypercube\"",
                parameters.len()
            )));
        }
        let parameters = parameters
            .into_iter()
            .map(|(name, text)| Ok((name.clone(), Distribution::parse(&name, &text)?, text)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Samples { method, count, seed, parameters })
    }

    /// How many points there are.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no points (never: `new` refuses it).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The parameter names, in spec order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|(name, _, _)| name.as_str())
    }

    /// The values of point `index`, in the order of [`Samples::names`].
    pub fn point(&self, index: u64) -> impl Iterator<Item = (String, Value)> + '_ {
        self.parameters.iter().enumerate().map(move |(dim, (name, distribution, _))| {
            let jitter = unit(self.seed, index, dim as u64);
            let u = match self.method {
                Method::Random => jitter,
                Method::LatinHypercube => {
                    let stratum = permute(index, self.count, mix(self.seed ^ mix(dim as u64 + 1)));
                    (stratum as f64 + jitter) / self.count as f64
                }
                Method::Sobol => {
                    // `new` keeps index and dim within the sequence's limits.
                    let (i, d) = (u32::try_from(index).unwrap_or(u32::MAX), u32::try_from(dim).unwrap_or(u32::MAX));
                    let cell = f64::from(sobol_burley::sample(i, d, mix(self.seed) as u32));
                    cell + jitter / f64::from(1u32 << 24)
                }
            };
            (name.clone(), distribution.at(u.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0)))
        })
    }

    /// The table `parameter_samples` that gives these samples again.
    pub fn describe(&self) -> Params {
        let mut table = Params::new();
        table.insert("method".into(), Value::from(self.method.name()));
        table.insert("samples".into(), Value::Int(i64::try_from(self.count).unwrap_or(i64::MAX)));
        table.insert("seed".into(), Value::Int(i64::try_from(self.seed).unwrap_or(i64::MAX)));
        for (name, _, text) in &self.parameters {
            table.insert(name.clone(), Value::Str(text.clone()));
        }
        table
    }
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1) for (seed, index, dimension).
fn unit(seed: u64, index: u64, dim: u64) -> f64 {
    let bits = mix(mix(seed) ^ mix(index.wrapping_mul(0xD1B5_4A32_D192_ED03)) ^ mix(dim.wrapping_add(0x51)));
    ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// `index` (below `n`) mapped by a keyed permutation of `0..n`: a four-round Feistel
/// network on the smallest even number of bits that holds `n`, applied again while the
/// result is `n` or more (it stays a permutation of `0..n`).
fn permute(index: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = (64 - (n - 1).leading_zeros()).div_ceil(2) * 2;
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    let mut x = index;
    loop {
        let (mut left, mut right) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = mix(right ^ mix(key.wrapping_add(round))) & mask;
            (left, right) = (right, left ^ f);
        }
        x = (left << half) | right;
        if x < n {
            return x;
        }
    }
}

/// The quantile function of the standard normal distribution (Acklam's rational
/// approximation, relative error below 1.2e-9).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(method: &str, n: u64, params: &[(&str, &str)]) -> Result<Samples> {
        Samples::new(method, n, 7, params.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    #[test]
    fn latin_hypercube_puts_one_point_in_each_stratum() {
        let s = samples("latin_hypercube", 100, &[("x", "uniform(0, 1)"), ("y", "uniform(10, 20)")]).unwrap();
        let mut xs = [false; 100];
        let mut ys = [false; 100];
        for i in 0..100 {
            let point: Params = s.point(i).collect();
            let x = point["x"].as_f64().unwrap();
            let y = point["y"].as_f64().unwrap();
            xs[(x * 100.0) as usize] = true;
            ys[((y - 10.0) * 10.0) as usize] = true;
        }
        assert!(xs.iter().all(|&b| b) && ys.iter().all(|&b| b));
    }

    #[test]
    fn the_same_seed_gives_the_same_points_and_values_stay_in_range() {
        let params = [("a", "log_uniform(1e-4, 1)"), ("b", "integers(3, 6)"), ("c", "choice([1, \"x\"])")];
        let s = samples("random", 1000, &params).unwrap();
        let again = samples("random", 1000, &params).unwrap();
        for i in 0..1000 {
            let p: Params = s.point(i).collect();
            assert_eq!(p, again.point(i).collect::<Params>());
            let a = p["a"].as_f64().unwrap();
            assert!((1e-4..=1.0).contains(&a), "{a}");
            assert!((3..6).contains(&p["b"].as_i64().unwrap()));
            assert!(p["c"] == Value::Int(1) || p["c"] == Value::from("x"));
        }
        let normal = samples("random", 2000, &[("n", "normal(5, 2)")]).unwrap();
        let mean = (0..2000).map(|i| normal.point(i).next().unwrap().1.as_f64().unwrap()).sum::<f64>() / 2000.0;
        assert!((mean - 5.0).abs() < 0.2, "{mean}");
    }

    #[test]
    fn permutations_are_bijections() {
        for n in [1, 2, 3, 17, 64, 1000] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 99)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bad_distributions_say_why() {
        let err = samples("random", 3, &[("x", "uniform(1, 1)")]).unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("lo (1) must be below hi (1)"), "{err}");
        let err = samples("random", 3, &[("x", "gauss(0, 1)")]).unwrap_err().to_string();
        assert!(err.contains("`gauss` is not a distribution"), "{err}");
        assert!(samples("random", 3, &[("x", "normal(0, -1)")]).is_err());
        assert!(samples("random", 3, &[("x", "log_uniform(0, 1)")]).is_err());
        assert!(samples("random", 3, &[("x", "choice([])")]).is_err());
        assert!(samples("random", 0, &[("x", "uniform(0, 1)")]).is_err());
        assert!(samples("grid", 3, &[("x", "uniform(0, 1)")]).unwrap_err().to_string().contains("`grid`"));
        assert!(samples("random", 3, &[("x", "uniform(0, 1")]).is_err());
    }

    /// The discrepancy-free property of a base-2 sequence: of the first 2^k points, each
    /// dyadic interval of length 2^-k of every coordinate holds exactly one, and in every
    /// pair of coordinates each of the 2^(k/2) × 2^(k/2) cells holds one too.
    #[test]
    fn sobol_points_fill_every_dyadic_cell_once() {
        let params = [("x", "uniform(0, 1)"), ("y", "uniform(0, 1)"), ("z", "uniform(0, 1)")];
        let s = samples("sobol", 256, &params).unwrap();
        let points: Vec<Vec<f64>> =
            (0..256).map(|i| s.point(i).map(|(_, v)| v.as_f64().expect("a number")).collect()).collect();
        for dim in 0..3 {
            let mut cells = [0u32; 256];
            for p in &points {
                cells[(p[dim] * 256.0) as usize] += 1;
            }
            assert!(cells.iter().all(|&n| n == 1), "dimension {dim}: {cells:?}");
        }
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let mut cells = [[0u32; 16]; 16];
            for p in &points {
                cells[(p[a] * 16.0) as usize][(p[b] * 16.0) as usize] += 1;
            }
            assert!(cells.iter().flatten().all(|&n| n == 1), "dimensions {a} and {b}");
        }
        // Deterministic for a seed, another sequence for another seed.
        let again = samples("sobol", 256, &params).unwrap();
        assert!((0..256).all(|i| s.point(i).eq(again.point(i))));
        let other = Samples::new("sobol", 256, 8, params.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
            .unwrap();
        assert!((0..256).any(|i| !s.point(i).eq(other.point(i))));
    }

    #[test]
    fn sobol_beyond_its_limits_says_what_to_use() {
        let err = samples("sobol", 70_000, &[("x", "uniform(0, 1)")]).unwrap_err().to_string();
        assert!(err.contains("at most 65536 samples") && err.contains("latin_hypercube"), "{err}");
        let many: Vec<(String, String)> = (0..257).map(|i| (format!("p{i}"), "uniform(0, 1)".to_owned())).collect();
        let err = Samples::new("sobol", 4, 1, many).unwrap_err().to_string();
        assert!(err.contains("at most 256 parameters"), "{err}");
    }
}
