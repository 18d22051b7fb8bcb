"""Parts of the hypernetwork learners (`clbench.learners.hnet`): target networks whose weights are all
given from outside (`target`), the chunked generators and the MIP input encoding (`generator`), and the
look-ahead of an Adam step (`lookahead`)."""
