//! The tensor-level shape rules shared by the host plugin and the kernels component:
//! hand-computed cases and the errors each rule gives.

use tensorlet_kernels::{
    Conv2dParams, DenseDims, broadcast_dims, conv2d_dims, dense_dims, rank4, reshape_dims,
};

#[test]
fn dense_dims_flatten_leading_dimensions() {
    let d = dense_dims(&[2, 3, 5], &[7, 5], Some(&[7])).unwrap();
    assert_eq!(
        d,
        DenseDims {
            m: 6,
            k: 5,
            n: 7,
            out_shape: vec![2, 3, 7]
        }
    );
    let e = dense_dims(&[2, 4], &[7, 5], None).unwrap_err();
    assert!(e.message.contains("last dimension must be 5"), "{e}");
    assert!(dense_dims(&[5], &[7, 5], Some(&[6])).is_err());
    assert!(dense_dims(&[], &[7, 5], None).is_err());
    assert!(dense_dims(&[5], &[7, 5, 1], None).is_err());
}

#[test]
fn conv2d_dims_check_rank_geometry_and_bias() {
    let p = Conv2dParams::default();
    let [x, w, out] = conv2d_dims(&[1, 3, 10, 8], &[4, 3, 3, 3], Some(&[4]), &p).unwrap();
    assert_eq!((x, w, out), ([1, 3, 10, 8], [4, 3, 3, 3], [1, 4, 8, 6]));
    let e = conv2d_dims(&[3, 10, 8], &[4, 3, 3, 3], None, &p).unwrap_err();
    assert!(e.message.starts_with("conv2d: x must have rank 4"), "{e}");
    let e = conv2d_dims(&[1, 3, 10, 8], &[4, 3, 3, 3], Some(&[3]), &p).unwrap_err();
    assert!(e.message.contains("bias must have shape [4]"), "{e}");
    assert!(conv2d_dims(&[1, 2, 10, 8], &[4, 3, 3, 3], None, &p).is_err());
}

#[test]
fn reshape_infers_one_zero_and_broadcast_takes_suffixes() {
    assert_eq!(reshape_dims(&[2, 3, 4], &[0, 4]).unwrap(), vec![6, 4]);
    assert_eq!(reshape_dims(&[2, 3, 4], &[24]).unwrap(), vec![24]);
    assert!(reshape_dims(&[2, 3, 4], &[0, 0]).is_err());
    assert!(reshape_dims(&[2, 3, 4], &[5, 0]).is_err());
    assert!(reshape_dims(&[2, 3, 4], &[5, 5]).is_err());
    assert!(broadcast_dims("add", &[2, 3, 4], &[3, 4]).is_ok());
    assert!(broadcast_dims("add", &[2, 3, 4], &[2, 3, 4]).is_ok());
    assert!(broadcast_dims("mul", &[2, 3, 4], &[2, 3]).is_err());
    assert_eq!(rank4("x", &[1, 2, 3, 4]).unwrap(), [1, 2, 3, 4]);
    assert!(rank4("x", &[1, 2, 3]).is_err());
}
