# Bad inputs are rejected by the variables' validation blocks before anything is planned.
# tests/infra/test_terraform.py additionally checks the error messages users see.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  cluster_name = "mlplane-test"
}

run "gpu_max_below_min" {
  command = plan
  variables {
    gpu_node_groups = { g5 = { instance_types = ["g5.xlarge"], min_size = 3, max_size = 2 } }
  }
  expect_failures = [var.gpu_node_groups]
}

run "gpu_negative_min" {
  command = plan
  variables {
    gpu_node_groups = { g5 = { instance_types = ["g5.xlarge"], min_size = -1 } }
  }
  expect_failures = [var.gpu_node_groups]
}

run "gpu_non_gpu_instance_family" {
  command = plan
  variables {
    gpu_node_groups = { cpu = { instance_types = ["m5.xlarge"] } }
  }
  expect_failures = [var.gpu_node_groups]
}

run "gpu_arm_instance_family" {
  command = plan
  variables {
    gpu_node_groups = { arm = { instance_types = ["g5g.xlarge"] } }
  }
  expect_failures = [var.gpu_node_groups]
}

run "gpu_non_nvidia_ami" {
  command = plan
  variables {
    gpu_node_groups = { g5 = { instance_types = ["g5.xlarge"], ami_type = "AL2023_x86_64_STANDARD" } }
  }
  expect_failures = [var.gpu_node_groups]
}

run "vpc_cidr_not_a_cidr" {
  command = plan
  variables {
    vpc_cidr = "10.0.0.0/33"
  }
  expect_failures = [var.vpc_cidr]
}

run "vpc_cidr_too_small" {
  command = plan
  variables {
    vpc_cidr = "10.0.0.0/26"
  }
  expect_failures = [var.vpc_cidr]
}

run "single_availability_zone" {
  command = plan
  variables {
    availability_zones = ["us-east-1a"]
  }
  expect_failures = [var.availability_zones]
}

run "az_count_one" {
  command = plan
  variables {
    az_count = 1
  }
  expect_failures = [var.az_count]
}

run "bad_cluster_name" {
  command = plan
  variables {
    cluster_name = "My_Cluster"
  }
  expect_failures = [var.cluster_name]
}

run "existing_vpc_without_subnets" {
  command = plan
  variables {
    vpc_id = "vpc-0123456789abcdef0"
  }
  expect_failures = [var.vpc_id]
}

run "model_server_namespace_not_a_name" {
  command = plan
  variables {
    model_server_namespaces = ["Team_A"]
  }
  expect_failures = [var.model_server_namespaces]
}
