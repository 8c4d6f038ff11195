console.log('glint360k recipe');
