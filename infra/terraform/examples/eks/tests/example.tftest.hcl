# The example's defaults pass the module's validation and plan offline (mocked AWS provider).
# Run from examples/eks: `terraform init -backend=false && terraform test`.

mock_provider "aws" {
  source          = "../../modules/gpu-cluster/tests/mocks"
  override_during = plan
}

run "defaults_plan" {
  command = plan

  assert {
    condition     = output.kubeconfig_command == "aws eks update-kubeconfig --region us-east-1 --name mlplane"
    error_message = "unexpected kubeconfig_command: ${output.kubeconfig_command}"
  }

  assert {
    condition     = yamldecode(output.mlplane_values).mlflow.artifactStore.bucket == "mlplane-mlflow-artifacts-123456789012"
    error_message = "the rendered values must name the artifact bucket"
  }

  assert {
    condition     = alltrue([for ng in module.gpu_cluster.gpu_node_group_names : startswith(ng, "mlplane-gpu-")]) && length(module.gpu_cluster.gpu_node_group_names) == 2
    error_message = "the example defines two GPU pools"
  }
}
