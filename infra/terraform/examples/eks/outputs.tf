output "cluster_name" {
  description = "EKS cluster name."
  value       = module.gpu_cluster.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API server endpoint."
  value       = module.gpu_cluster.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Run this to point kubectl and helm at the cluster."
  value       = module.gpu_cluster.kubeconfig_command
}

output "artifact_bucket" {
  description = "S3 bucket holding MLflow artifacts."
  value       = module.gpu_cluster.artifact_bucket
}

output "db_endpoint" {
  description = "Host name of the MLflow PostgreSQL database."
  value       = module.gpu_cluster.db_endpoint
}

output "db_master_password_secret_arn" {
  description = "Secrets Manager secret with the database master password."
  value       = module.gpu_cluster.db_master_password_secret_arn
}

output "mlflow_role_arn" {
  description = "IRSA role of the MLflow server."
  value       = module.gpu_cluster.mlflow_role_arn
}

output "model_server_role_arn" {
  description = "IRSA role of model servers."
  value       = module.gpu_cluster.model_server_role_arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler."
  value       = module.gpu_cluster.cluster_autoscaler_role_arn
}

output "mlplane_values" {
  description = "Values for charts/mlplane: `terraform output -raw mlplane_values > mlplane-values.yaml`."
  value       = module.gpu_cluster.mlplane_values
}
