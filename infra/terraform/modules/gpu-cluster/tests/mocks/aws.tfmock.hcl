# Shared mock values for the AWS provider in this module's tests (no credentials, no API calls).
# Data sources that would otherwise return random strings (partition, region, AZs) get
# realistic values so ARNs, names and rendered outputs stay valid and assertable.

mock_data "aws_partition" {
  defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
}
mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}
mock_data "aws_region" {
  defaults = { name = "us-east-1" }
}
mock_data "aws_availability_zones" {
  defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"] }
}

mock_resource "aws_eks_cluster" {
  defaults = {
    endpoint = "https://EXAMPLE.gr7.us-east-1.eks.amazonaws.com"
    identity = [{ oidc = [{ issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE" }] }]
  }
}
mock_resource "aws_iam_openid_connect_provider" {
  defaults = { arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE" }
}
mock_resource "aws_kms_key" {
  defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000" }
}
mock_resource "aws_s3_bucket" {
  defaults = { arn = "arn:aws:s3:::mock-bucket" }
}
mock_resource "aws_db_instance" {
  defaults = {
    address            = "mlplane-test-mlflow.cexample.us-east-1.rds.amazonaws.com"
    endpoint           = "mlplane-test-mlflow.cexample.us-east-1.rds.amazonaws.com:5432"
    master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-example", kms_key_id = "k", secret_status = "active" }]
  }
}
mock_resource "aws_iam_role" {
  defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
}
