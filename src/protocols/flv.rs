//! FLV tags (being written).
