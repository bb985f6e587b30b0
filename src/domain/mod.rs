//! Stream domain: amounts and the contract's accrual rules.
pub mod accrual;
pub mod amount;
