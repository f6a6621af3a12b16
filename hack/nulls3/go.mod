module ferry.dev/hack/nulls3

go 1.21
