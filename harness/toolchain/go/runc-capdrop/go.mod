module meshproof.local/runc-capdrop

go 1.22
