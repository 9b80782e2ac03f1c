module meshproof.local/sampler

go 1.22
