//! Data sets: loading, seeded shuffles and splits (being written).
