terraform {
  # 1.11: `override_during` in the module's `terraform test` files.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}
