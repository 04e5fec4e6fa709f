//! Enumerating a space: its combinations in order, lazily, those the constraints admit, and
//! how many there are (counted within a time budget, or exactly).

use std::time::{Duration, Instant};

use super::{Axis, Count, ParameterSpace, Source, CHECK_EVERY};
use crate::{Params, Result};

impl ParameterSpace {
    /// The first combination, whether or not the constraints admit it: what every
    /// combination of a cross product looks like, found at once.
    pub fn first_unconstrained(&self) -> Option<Params> {
        self.nth_unconstrained(0)
    }

    /// The first combination of each block of a union (of the space itself otherwise),
    /// whether or not the constraints admit it, with the block's position: each block may
    /// have parameters of its own, and a process kind is checked against each.
    pub fn block_firsts(&self) -> Vec<(usize, Params)> {
        match &self.source {
            Source::Union(blocks) => blocks
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let mut first = b.first_unconstrained()?;
                    first.extend(self.constants.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Some((i, first))
                })
                .collect(),
            _ => self.first_unconstrained().map(|first| (0, first)).into_iter().collect(),
        }
    }

    /// The parameter names, in spec order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The constraint expressions, as given (those of every block, for a union).
    pub fn constraints(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self.constraints.iter().map(|c| c.text.as_str()).collect();
        if let Source::Union(blocks) = &self.source {
            all.extend(blocks.iter().flat_map(|b| b.constraints.iter().map(|c| c.text.as_str())));
        }
        all.into_iter()
    }

    /// Whether any constraint filters the combinations.
    fn is_constrained(&self) -> bool {
        !self.constraints.is_empty()
            || matches!(&self.source, Source::Union(blocks) if blocks.iter().any(|b| !b.constraints.is_empty()))
    }

    /// Enumerates the combinations that satisfy every constraint, lazily.
    ///
    /// A constraint that fails to evaluate on some combination (e.g. divides by zero)
    /// excludes that combination and logs an error that names it; [`ParameterSpace::count`]
    /// (which [`Operation::sweep`](crate::Operation::sweep) calls) refuses such a space
    /// before anything runs.
    pub fn iter(&self) -> impl Iterator<Item = Params> + Send + '_ {
        self.unconstrained().filter(move |(index, params)| self.admits(*index, params)).map(|(_, params)| params)
    }

    /// Whether every constraint holds for `params`, combination `index`; one that fails to
    /// evaluate is logged.
    fn admits(&self, index: u64, params: &Params) -> bool {
        match self.holds_at(index, params) {
            Ok(holds) => holds,
            Err(e) => {
                tracing::error!(target: "taskfarm", "{e}; the combination is left out");
                false
            }
        }
    }

    /// Whether the constraints that apply to combination `index` hold for its `params`.
    fn holds_at(&self, index: u64, params: &Params) -> Result<bool> {
        for constraint in &self.constraints {
            if !constraint.holds(params)? {
                return Ok(false);
            }
        }
        if let Source::Union(blocks) = &self.source {
            if let Some((block, local)) = block_of(blocks, index) {
                return block.holds_at(local, params);
            }
        }
        Ok(true)
    }

    /// Enumerates the combinations lazily, owning the space (for `'static` sources). A
    /// stop request (Ctrl-C) ends it, also while it looks through a long stretch of
    /// combinations that the constraints leave out.
    pub fn into_iter_owned(self) -> impl Iterator<Item = Params> + Send + 'static {
        let mut index = 0u64;
        std::iter::from_fn(move || loop {
            let params = self.nth_unconstrained(index)?;
            index += 1;
            if self.admits(index - 1, &params) {
                return Some(params);
            }
            if index.is_multiple_of(CHECK_EVERY) && crate::stop_requested() {
                return None;
            }
        })
    }

    /// How many combinations satisfy the constraints, counted for at most `budget` (and
    /// until a stop is requested): the constraints are evaluated on the combinations in
    /// order, so a space of 10^20 combinations gives a lower bound at once instead of a
    /// count never. A constraint that cannot be evaluated on a combination examined is an
    /// error that names it.
    pub fn count_within(&self, budget: Duration) -> Result<Count> {
        let of = self.unconstrained_len();
        if !self.is_constrained() {
            return Ok(Count::Exact(of));
        }
        let started = Instant::now();
        let mut admitted = 0u64;
        for (examined, params) in self.unconstrained() {
            if examined.is_multiple_of(CHECK_EVERY)
                && examined > 0
                && (started.elapsed() >= budget || crate::stop_requested())
            {
                return Ok(Count::AtLeast { admitted, examined, of });
            }
            admitted += u64::from(self.holds_at(examined, &params)?);
        }
        Ok(Count::Exact(admitted))
    }

    /// How many combinations satisfy the constraints (evaluates them on every combination
    /// once, however long that takes: see [`ParameterSpace::count_within`]). A constraint
    /// that cannot be evaluated on some combination is an error that names it.
    pub fn count(&self) -> Result<u64> {
        if !self.is_constrained() {
            return Ok(self.unconstrained_len());
        }
        let mut count = 0u64;
        for (index, params) in self.unconstrained() {
            count += u64::from(self.holds_at(index, &params)?);
        }
        Ok(count)
    }

    /// How many combinations there are before the constraints.
    pub fn unconstrained_len(&self) -> u64 {
        match &self.source {
            // `ranges`, `from_axes` and `union` have checked that the product or sum fits.
            Source::Ranges(ranges) => ranges.values().map(|v| v.len() as u64).fold(1, u64::saturating_mul),
            Source::Settings(settings) => settings.len() as u64,
            Source::Axes(axes) => axes.iter().map(Axis::len).fold(1, u64::saturating_mul),
            Source::Union(blocks) => blocks.iter().map(ParameterSpace::unconstrained_len).fold(0, u64::saturating_add),
        }
    }

    fn unconstrained(&self) -> impl Iterator<Item = (u64, Params)> + Send + '_ {
        (0..self.unconstrained_len()).filter_map(move |i| self.nth_unconstrained(i).map(|p| (i, p)))
    }

    fn nth_unconstrained(&self, mut index: u64) -> Option<Params> {
        if index >= self.unconstrained_len() {
            return None;
        }
        let mut params = match &self.source {
            Source::Settings(settings) => settings.get(index as usize).cloned()?,
            Source::Ranges(ranges) => {
                // Mixed-radix digits, last parameter fastest.
                let mut picked = vec![0usize; ranges.len()];
                for (slot, values) in picked.iter_mut().zip(ranges.values()).rev() {
                    let len = values.len() as u64;
                    *slot = (index % len) as usize;
                    index /= len;
                }
                ranges.iter().zip(picked).map(|((name, values), i)| (name.clone(), values[i].clone())).collect()
            }
            Source::Axes(axes) => {
                let mut rows = vec![0u64; axes.len()];
                for (slot, axis) in rows.iter_mut().zip(axes).rev() {
                    let len = axis.len();
                    *slot = index % len;
                    index /= len;
                }
                let mut params = Params::new();
                for (axis, row) in axes.iter().zip(rows) {
                    axis.push_row(row, &mut params);
                }
                params
            }
            Source::Union(blocks) => {
                let (block, local) = block_of(blocks, index)?;
                block.nth_unconstrained(local)?
            }
        };
        params.extend(self.constants.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(params)
    }
}

/// The block of a union that holds combination `index`, and the index within it.
fn block_of(blocks: &[ParameterSpace], mut index: u64) -> Option<(&ParameterSpace, u64)> {
    for block in blocks {
        let len = block.unconstrained_len();
        if index < len {
            return Some((block, index));
        }
        index -= len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::ints;
    use super::*;
    use crate::Error;

    #[test]
    fn counting_within_a_budget_gives_a_lower_bound_or_the_count() {
        let big = ParameterSpace::ranges((0..8).map(|p| (format!("p{p}"), (0..10).collect::<Vec<i64>>())))
            .and_then(|s| s.constrain("p7 < 5"))
            .expect("a space");
        match big.count_within(Duration::ZERO).expect("a count") {
            Count::AtLeast { admitted, examined, of } => {
                assert_eq!((examined, of), (CHECK_EVERY, 100_000_000));
                assert_eq!(admitted, 130, "p7 < 5 for 5 of every 10, and for the first 5 of the last 6");
            }
            exact => panic!("10^8 combinations were not counted at once: {exact:?}"),
        }
        let small =
            ParameterSpace::ranges([("x", ints(&[1, 2, 3]))]).and_then(|s| s.constrain("x > 1")).expect("a space");
        assert_eq!(small.count_within(Duration::from_secs(60)).expect("a count"), Count::Exact(2));
        // An evaluation error on a combination examined is still an error.
        let failing =
            ParameterSpace::ranges([("x", ints(&[1, 0, 2]))]).and_then(|s| s.constrain("1 / x > 0")).expect("a space");
        assert!(matches!(failing.count_within(Duration::from_secs(60)), Err(Error::ConstraintFailed { .. })));
        // A sweep of the big space starts without its length.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Noop;
        impl crate::Process for Noop {
            type Output = ();
            fn run(&self, _: &crate::ProcessContext<'_>) -> std::result::Result<(), crate::ProcessError> {
                Ok(())
            }
        }
        let op = crate::Operation::sweep("big", big, 1, |_, _| Noop).expect("an operation");
        assert_eq!(op.len(), None);
    }

    proptest::proptest! {
        #[test]
        fn count_is_product_and_owned_agrees(a in 1usize..5, b in 1usize..5, c in 1usize..4) {
            let space = ParameterSpace::ranges([
                ("a", ints(&(0..a as i64).collect::<Vec<_>>())),
                ("b", ints(&(0..b as i64).collect::<Vec<_>>())),
                ("c", ints(&(0..c as i64).collect::<Vec<_>>())),
            ]).unwrap();
            proptest::prop_assert_eq!(space.count().unwrap(), (a * b * c) as u64);
            let borrowed: Vec<_> = space.iter().collect();
            let owned: Vec<_> = space.clone().into_iter_owned().collect();
            proptest::prop_assert_eq!(borrowed, owned);
        }
    }
}
