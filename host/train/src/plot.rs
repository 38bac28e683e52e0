//! PNG charts for training and evaluation reports (being written).
