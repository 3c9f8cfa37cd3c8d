"""What a person looks at: the labelling gallery (:mod:`.gallery`) and the ``depict`` folder (:mod:`.depict`)."""
