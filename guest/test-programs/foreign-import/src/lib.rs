//! A component importing `tensorlet-test:foreign/gpu-device`, which no tensorlet host
//! provides: the host's load-time import check must refuse it and name that import.

mod bindings {
    //! The bindings generated from `wit/foreign.wit`.
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        path: "wit",
        world: "foreign",
    });

    use super::Foreign;
    export!(Foreign);
}

/// The exported world.
struct Foreign;

impl bindings::Guest for Foreign {
    fn probe() -> u32 {
        bindings::tensorlet_test::foreign::gpu_device::count()
    }
}
