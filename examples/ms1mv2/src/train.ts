console.log('ms1mv2 recipe');
