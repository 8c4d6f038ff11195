/**
 * glint360k_r100 (`recognition/arcface_torch/configs/glint360k_r100.py`): CosFace (1.0, 0.0, 0.4), 360232
 * identities, 17091657 images, iResNet-100, 20 epochs. The arcface_torch config trains with sample_rate 1.0; the
 * Partial FC model-zoo run of Glint360K (and this recipe) samples 10% of the class centers.
 */
export default {
  margin_list: [1.0, 0.0, 0.4],
  network: 'r100',
  resume: false,
  output: null,
  embedding_size: 512,
  sample_rate: 0.1,
  fp16: true,
  momentum: 0.9,
  weight_decay: 1e-4,
  batch_size: 128,
  lr: 0.1,
  verbose: 2000,
  dali: false,
  rec: '/train_tmp/glint360k',
  num_classes: 360232,
  num_image: 17091657,
  num_epoch: 20,
  warmup_epoch: 0,
  val_targets: ['lfw', 'cfp_fp', 'agedb_30'],
};
