"""Running the predictor's cases on a Ray cluster (``qmedsam-predict --ray``); an optional extra
(``pip install 'qmedsam[cluster]'``) that the submission image and the plain predictor never import."""
