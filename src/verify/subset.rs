//! Which packs `verify --read-data-subset` reads, by pack id.

use super::*;

/// Which packs `--read-data` reads. A pack is placed by the first 4 bytes
/// of its id, read as a big-endian number `x` in `0..2^32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// `N%` of the id space, in a window that moves on by its own width
    /// every day: on day `d` (days since 1970-01-01 UTC) the packs with
    /// `(x - d × w) mod 2^32 < w`, where `w = N% of 2^32`. Consecutive
    /// nights read consecutive windows, so `ceil(100 / N)` nights in a row
    /// read every pack.
    Percent(f64),
    /// Part `k` of `m` (1-based): packs with `x mod m = k - 1`, whatever
    /// the day; `1/m` … `m/m` together read every pack exactly once.
    Part(u32, u32),
}

/// The part of the id space a subset reads on one day, for the report:
/// packs whose 4-byte id prefix `x` has `(x - from) mod 2^32 < width`
/// (for `K/M`, those with `x mod M = K - 1`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubsetWindow {
    /// What is read, in words.
    pub description: String,
    /// Start of the window (for `N%`).
    pub from: u32,
    /// Width of the window, up to 2^32 (for `N%`).
    pub width: u64,
}

impl Subset {
    /// Parses `N%` or `K/M`.
    pub fn parse(s: &str) -> Result<Subset> {
        let bad = || Error::Invalid(format!("{s:?} is not a subset like 10% or 3/7"));
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            // 0% reads nothing, and a check that reads nothing must not
            // pass for one that read its share (`${PCT}%` with PCT unset
            // or 0 in a nightly job).
            if !(p > 0.0 && p <= 100.0) {
                return Err(Error::Invalid(format!(
                    "{s:?}: a subset of N% needs N above 0 and at most 100"
                )));
            }
            return Ok(Subset::Percent(p));
        }
        let (k, m) = s.split_once('/').ok_or_else(bad)?;
        let (k, m): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || k == 0 || k > m {
            return Err(Error::Invalid(format!(
                "{s:?}: a subset K/M needs M above 0 and K from 1 to M"
            )));
        }
        Ok(Subset::Part(k, m))
    }

    /// The width of an `N%` window in the 2^32 id space, rounded up, so
    /// that `ceil(100 / N)` windows cover it all (rounded to nearest, five
    /// windows of 20% missed one id, and the nights were said to be six).
    pub(super) fn width(p: f64) -> u64 {
        ((p / 100.0) * 4_294_967_296.0).ceil().min(4_294_967_296.0) as u64
    }

    /// The start of the `N%` window on `day`.
    pub(super) fn start(p: f64, day: u64) -> u32 {
        (u128::from(day) * u128::from(Subset::width(p)) % (1u128 << 32)) as u32
    }

    /// Whether the pack is read on `day` (days since the epoch, UTC; only
    /// `N%` depends on it).
    pub fn contains(&self, id: &PackId, day: u64) -> bool {
        let x = u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes"));
        match *self {
            Subset::All => true,
            Subset::Percent(p) => {
                u64::from(x.wrapping_sub(Subset::start(p, day))) < Subset::width(p)
            }
            Subset::Part(k, m) => x % m == k - 1,
        }
    }

    /// What the subset reads on `day`.
    pub fn window(&self, day: u64) -> SubsetWindow {
        match *self {
            Subset::All => SubsetWindow {
                description: "every pack".into(),
                from: 0,
                width: 1 << 32,
            },
            Subset::Percent(p) => {
                let (from, width) = (Subset::start(p, day), Subset::width(p));
                let nights = if width == 0 {
                    "never covers everything".to_string()
                } else {
                    format!(
                        "{} nights in a row read every pack",
                        (1u64 << 32).div_ceil(width)
                    )
                };
                SubsetWindow {
                    description: format!(
                        "{p}% of packs: ids from {from:08x} for {:.1}% of the id space (day {day}; {nights})",
                        width as f64 / 4_294_967_296.0 * 100.0
                    ),
                    from,
                    width,
                }
            }
            Subset::Part(k, m) => SubsetWindow {
                description: format!(
                    "part {k} of {m}: packs whose id prefix is {} modulo {m}",
                    k - 1
                ),
                from: 0,
                width: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_partition_the_id_space() {
        let ids: Vec<PackId> = (0..200u32)
            .map(|i| PackId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        for id in &ids {
            let parts = (1..=7)
                .filter(|k| Subset::Part(*k, 7).contains(id, 0))
                .count();
            assert_eq!(parts, 1);
            assert!(Subset::Percent(100.0).contains(id, 12345));
            assert!(!Subset::Percent(0.0).contains(id, 12345));
        }
        // N% moves on every day: 30% reads about 30% a night, and any four
        // nights in a row read every pack; two nights in a row overlap
        // nowhere.
        for first in [0u64, 20_000, 20_001, u64::from(u32::MAX) * 3] {
            let p = Subset::Percent(30.0);
            let read = |day: u64| -> HashSet<PackId> {
                ids.iter()
                    .filter(|id| p.contains(id, day))
                    .copied()
                    .collect()
            };
            let nights: Vec<HashSet<PackId>> = (first..first + 4).map(read).collect();
            for n in &nights[..3] {
                assert!((40..=80).contains(&n.len()), "{}", n.len());
            }
            assert!(nights[0].is_disjoint(&nights[1]));
            let all: HashSet<PackId> = nights.iter().flatten().copied().collect();
            assert_eq!(all.len(), ids.len(), "from day {first}");
            assert_ne!(read(first), read(first + 1));
        }
        // `ceil(100 / N)` nights, as the help says.
        for (p, nights) in [(20.0, 5), (0.5, 200), (0.1, 1000), (30.0, 4), (100.0, 1)] {
            let d = Subset::Percent(p).window(7).description;
            assert!(d.contains(&format!("; {nights} nights")), "{p}%: {d}");
        }
        assert_eq!(Subset::parse("10%").unwrap(), Subset::Percent(10.0));
        assert_eq!(Subset::parse("3/7").unwrap(), Subset::Part(3, 7));
        for bad in ["0/7", "8/7", "x", "101%", "1/0", "0%", "-5%", "NaN%"] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
    }
}
