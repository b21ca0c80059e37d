terraform {
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Configure remote state before using this for anything shared, e.g.:
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "mlplane/eks.tfstate"
  #   region       = "us-east-1"
  #   use_lockfile = true
  # }
}
