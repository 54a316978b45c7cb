"""The offline semantic parser: a request → tokens linked to the catalog → an intermediate form → a pipeline.

`tokens` splits and normalises the words, `link` ties them to sources, columns and values,
`dates` reads time expressions, `parse` builds the `ir.Request`, `compile` turns it into a
pipeline and a plain-words reading. Every word is either consumed by the reading or reported.
"""
