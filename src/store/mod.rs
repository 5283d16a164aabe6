//! The primary: its Hrana client and the SQL of the reads.

pub mod counter;
pub mod db;
pub mod issues;
pub mod membership;
pub mod organisations;
#[cfg(test)]
pub mod test_db;
pub mod value;
