"""Making fingerprints: the characteristic-example loop (generate, gradients, frequency), the base's distinctive
mistakes (mistakes), image channels for EOT (channels), conferrability selection (select), BN folding and PNG
export. Nothing here judges a suspect; :mod:`charex.judge` does."""
