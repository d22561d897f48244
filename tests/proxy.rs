//! The foundation, end to end on loopback: what reaches the instance, what does not.
