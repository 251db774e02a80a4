//! The `health` workload: `grpc.health.v1.Health/Check` of the whole server, the baseline a bare
//! tonic unary call reaches. Every answer must say SERVING.

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{CallError, Workload};

/// Calls `Health/Check` with an empty service name.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthWorkload;

impl Workload for HealthWorkload {
    type Client = HealthClient<Channel>;

    fn name(&self) -> &'static str {
        "health"
    }

    fn client(&self, channel: Channel) -> Self::Client {
        HealthClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client, _n: u64) -> Result<(), CallError> {
        let response = client
            .check(HealthCheckRequest::default())
            .await
            .map_err(|status| CallError::status(&status))?;
        if response.into_inner().status() != ServingStatus::Serving {
            return Err(CallError::new("not_serving"));
        }
        Ok(())
    }
}
