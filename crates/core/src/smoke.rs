//! A tiny end-to-end computation that proves a device works: upload, a matrix product and a
//! softmax, then an asynchronous read-back (the only kind that works on WebGPU in wasm).

use burn::tensor::{Device, Tensor, activation::softmax};

use crate::readback::{ComputeError, read_f32};

/// The left operand of the smoke test's product.
pub const SMOKE_LHS: [[f32; 2]; 2] = [[1.0, 2.0], [3.0, 4.0]];
/// The right operand of the smoke test's product.
pub const SMOKE_RHS: [[f32; 2]; 2] = [[0.5, -1.0], [0.25, 1.0]];

/// What the smoke computation read back from the device.
#[derive(Clone, Debug, PartialEq)]
pub struct SmokeResult {
    /// `SMOKE_LHS × SMOKE_RHS`, row-major.
    pub product: Vec<f32>,
    /// Row-wise softmax of the product, row-major; each row sums to 1.
    pub softmax: Vec<f32>,
}

/// Runs the smoke computation on `device` and reads the result back asynchronously.
pub async fn run_smoke(device: &Device) -> Result<SmokeResult, ComputeError> {
    let lhs = Tensor::<2>::from_floats(SMOKE_LHS, device);
    let rhs = Tensor::<2>::from_floats(SMOKE_RHS, device);
    let product = lhs.matmul(rhs);
    let probabilities = softmax(product.clone(), 1);
    let product = read_f32(product).await?;
    let softmax = read_f32(probabilities).await?;
    Ok(SmokeResult { product, softmax })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_on_flex_matches_hand_computed_values() {
        let result = pollster::block_on(run_smoke(&Device::flex())).expect("flex runs");
        // [[1,2],[3,4]] × [[0.5,-1],[0.25,1]] = [[1,1],[2.5,1]]
        assert_eq!(result.product, vec![1.0, 1.0, 2.5, 1.0]);
        let e = (1.5f32).exp();
        let expected = [0.5, 0.5, e / (e + 1.0), 1.0 / (e + 1.0)];
        for (got, want) in result.softmax.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "softmax {got} vs {want}");
        }
    }

    #[test]
    fn cpu_device_explains_why_it_is_used() {
        let device = crate::device::ComputeDevice::cpu("no adapter");
        assert_eq!(device.kind, crate::BackendKind::Cpu);
        assert!(device.describe().starts_with("CPU"));
        assert!(device.describe().contains("no adapter"));
    }
}
